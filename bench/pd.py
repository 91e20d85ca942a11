#!/usr/bin/env python3
"""Prefill-decode mode: smg-proxy against the Rust SMG, both in PD mode over the same
rendezvousing PD mocks (smg/testing/pd_workers.py), requests per second.

Layout (as bench/rig/compare.py): the gateway under test pinned to CPU 0 (one loaded at
a time), wrk and the mocks on CPU 1. For each mode (non-streaming and streaming chat)
every pass runs each gateway for ``--duration`` seconds with ``--connections``
connections, gateways interleaved, after a 3 s warm-up run each; it prints the median
requests/s and their ratio (``--json``: every run, with the gateway's CPU share and
requests per gateway CPU-second, ``rps_per_core``).

    python bench/pd.py                                  # 1 prefill + 1 decode, 10 s x 3 passes
    python bench/pd.py --duration 5 --passes 2 --json out.json

Needs wrk and the Rust SMG venv (bash bench/rig/setup_refs.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "rig"))
import compare as rig  # noqa: E402  (the rig's process, wrk and readiness helpers)

REPO = Path(__file__).resolve().parents[1]


def start_mocks(prefills: int, decodes: int, cpu: str, workdir: Path) -> tuple:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = workdir / "pd-mocks.log"
    p = rig.spawn([sys.executable, "-m", "smg.testing.pd_workers", "--prefills", str(prefills),
                   "--decodes", str(decodes)], log, cpu, env)
    deadline = time.monotonic() + 20
    lines: list = []
    while time.monotonic() < deadline and len(lines) < prefills + decodes:
        time.sleep(0.1)
        lines = [ln.split() for ln in log.read_text().splitlines() if ln.startswith(("prefill ", "decode "))]
    if len(lines) < prefills + decodes:
        raise SystemExit(f"PD mocks did not start:\n{rig.tail(log)}")
    pre = [x for ln in lines if ln[0] == "prefill" for x in ln[1:3]]
    dec = [ln[1] for ln in lines if ln[0] == "decode"]
    return p, pre, dec


def proxy_cmd(port: int, pre: list, dec: list) -> list:
    return [sys.executable, "-m", "smg", "launch", "--host", "127.0.0.1", "--port", str(port),
            "--pd-disaggregation", "--prefill", *pre, "--decode", *dec, "--policy", "round_robin",
            "--log-level", "warning", "--prometheus-host", "127.0.0.1", "--prometheus-port", str(rig.free_port())]


def rust_cmd(port: int, pre: list, dec: list) -> list:
    args = []
    for i in range(0, len(pre), 2):
        args += ["--prefill", pre[i], pre[i + 1]]
    for d in dec:
        args += ["--decode", d]
    return [str(rig._venv_bin("smg-rust", "smg")), "launch", "--host", "127.0.0.1", "--port", str(port),
            "--pd-disaggregation", *args, "--policy", "round_robin", "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(rig.free_port())]


def start(name: str, cmd, pre: list, dec: list, workdir: Path, body: bytes):
    port = rig.free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO)) if name == "smg-proxy" else \
        {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = rig.spawn(cmd(port, pre, dec), workdir / f"{name}.log", "0", env)
    rig.wait_ready(p, lambda: rig.http_call(port, "POST", rig.PATH, body)[0] == 200, 60, name)
    return p, port


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--prefills", type=int, default=1)
    ap.add_argument("--decodes", type=int, default=1)
    ap.add_argument("--modes", default="nonstream,stream")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    targets = {"smg-proxy": proxy_cmd, "smg-rust": rust_cmd}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="smg-pd-bench-") as tmp:
        workdir = Path(tmp)
        try:
            _, pre, dec = start_mocks(args.prefills, args.decodes, "1", workdir)
            for mode in args.modes.split(","):
                body = rig.BODIES[mode]
                script = rig.lua_script(workdir / f"{mode}.lua", body)
                raw = json.dumps(body).encode()
                runs: dict = {t: [] for t in targets}
                procs = {t: start(t, cmd, pre, dec, workdir, raw) for t, cmd in targets.items()}
                for t, (p, port) in procs.items():   # warm-up, not counted (connection pools, caches)
                    rig.run_wrk(f"http://127.0.0.1:{port}{rig.PATH}", script, args.connections, 3, "1", p)
                for _ in range(args.passes):
                    for t, (p, port) in procs.items():
                        res = rig.run_wrk(f"http://127.0.0.1:{port}{rig.PATH}", script, args.connections,
                                          args.duration, "1", p)
                        runs[t].append(res)
                for p, _ in procs.values():
                    rig.stop(p)
                med = {t: statistics.median(r["rps"] or 0 for r in rs) for t, rs in runs.items()}
                valid = {t: all(r["valid"] for r in rs) for t, rs in runs.items()}
                ratio = med["smg-proxy"] / med["smg-rust"] if med["smg-rust"] else None
                results[mode] = {"runs": runs, "median_rps": med, "valid": valid, "ratio": ratio}
                print(f"{mode:10s} smg-proxy {med['smg-proxy']:9.0f} req/s  smg-rust {med['smg-rust']:9.0f} req/s"
                      f"  ratio {ratio:.2f}" + ("" if all(valid.values()) else f"  INVALID {valid}"), flush=True)
        finally:
            rig.stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
