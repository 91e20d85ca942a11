"""``python -m smg.testing.engine_sim --engines 4 --port 31000 [--cache-blocks N ...]``: a fleet
in one process; prints one ``url`` a line once every engine accepts, runs until killed."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

import uvloop

from smg.testing.engine_sim.model import SimParams
from smg.testing.engine_sim.server import start_fleet


def main(argv: list | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m smg.testing.engine_sim")
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="first port (engines take consecutive ports); 0 = free ports")
    ap.add_argument("--model", default="sim-model")
    for f in dataclasses.fields(SimParams):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = ap.parse_args(argv)
    params = SimParams(**{f.name: getattr(a, f.name) for f in dataclasses.fields(SimParams)})

    async def run() -> None:
        ports = [a.port + i for i in range(a.engines)] if a.port else None
        engines = await start_fleet(a.engines, params, a.model, a.host, ports)
        for e in engines:
            print(e.url, flush=True)
        await asyncio.Event().wait()

    try:
        uvloop.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
