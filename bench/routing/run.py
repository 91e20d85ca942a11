#!/usr/bin/env python3
"""Routing quality: one seeded trace through smg (each policy) and the Rust SMG, each
against a fresh simulated fleet; a Markdown table of what the fleet saw.

Per variant and target: a new fleet (``python -m smg.testing.engine_sim``, one process),
the gateway, a readiness request, the engines' counters and caches reset, then the
trace (bench/routing/trace.py) replayed through the gateway by streaming clients.

Columns: hit rate = cached prompt tokens / prompt tokens, summed over the fleet's own
counters (the engines' ground truth, not the gateway's guess); TTFT and end-to-end
p50/p99 in ms as the clients saw them; throughput = answered requests / wall time;
imbalance = max / mean requests per engine; errors = non-200 answers.

Variants (``--variants``): ``roomy`` (4 engines, caches far larger than the trace),
``pressure`` (4 engines, each cache about three system prompts), ``single`` (2 engines
that run one request at a time).

Usage:
    python bench/routing/run.py                          # all variants, default targets
    python bench/routing/run.py --variants single --targets smg:cache_aware,smg-rust:cache_aware
    python bench/routing/run.py --passes 3 --out docs/benchmarks/routing-tables.md --json /tmp/routing.json

Targets: ``smg:POLICY[+flag[=value]...]`` (this checkout, ``python -m smg``),
``smg-rust:POLICY`` (``$SMG_RUST_BIN``, default the shared Rust SMG venv) and
``sglang-router:POLICY`` (``bash bench/rig/setup_refs.sh sglang-router``). With
``--passes N`` the targets run interleaved N times and each figure is the median.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "rig"))
sys.path.insert(0, str(REPO / "bench" / "routing"))
import compare as rig  # noqa: E402
from trace import TraceSpec, make_trace, replay  # noqa: E402

SMG_RUST = Path(os.environ.get("SMG_RUST_BIN", "/work/main/bench/.venvs/smg-rust/bin/smg"))
SGLANG_ROUTER = REPO / "bench" / ".venvs" / "sglang-router" / "bin" / "python"   # setup_refs.sh sglang-router


@dataclass
class Variant:
    engines: int
    sim: dict
    trace: dict = field(default_factory=dict)


SIM_BASE = {"block_size": 16, "max_running": 8, "prefill_us_per_token": 40.0, "prefill_overhead_ms": 0.5,
            "decode_base_ms": 2.0, "decode_per_req_ms": 0.2}
TRACE_BASE = {"conversations": 150, "rate": 20.0}
VARIANTS = {
    "roomy": Variant(4, {**SIM_BASE, "cache_blocks": 100000}, TRACE_BASE),
    "pressure": Variant(4, {**SIM_BASE, "cache_blocks": 300}, TRACE_BASE),
    "single": Variant(2, {**SIM_BASE, "max_running": 1, "cache_blocks": 100000},
                      {"conversations": 60, "rate": 5.0, "systems": 4}),
}
DEFAULT_TARGETS = ("smg:round_robin,smg:cache_aware,smg:cache_aware+cache-feedback,"
                   "smg:cache_aware+cache-aware-mode=ttft,smg:cache_aware+cache-aware-mode=ttft+cache-feedback,"
                   "smg-rust:cache_aware,sglang-router:cache_aware")


def sim_args(sim: dict) -> list:
    out = []
    for k, v in sim.items():
        out += ["--" + k.replace("_", "-"), str(v)]
    return out


def start_fleet(v: Variant, workdir: Path, tag: str) -> tuple:
    log = workdir / f"fleet-{tag}.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = rig.spawn([sys.executable, "-m", "smg.testing.engine_sim", "--engines", str(v.engines)]
                  + sim_args(v.sim), log, None, env)

    def urls() -> list:
        return [ln for ln in log.read_text().splitlines() if ln.startswith("http://")]
    rig.wait_ready(p, lambda: len(urls()) == v.engines, 30, "engine fleet")
    return p, urls()


def gateway_cmd(kind: str, policy: str, extra: list, port: int, urls: list) -> tuple:
    if kind == "smg":
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return [sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls,
                "--policy", policy, "--log-level", "warning", "--prometheus-host", "127.0.0.1",
                "--prometheus-port", str(rig.free_port()), *extra], env
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if kind == "sglang-router":
        return [str(SGLANG_ROUTER), "-m", "sglang_router.launch_router", "--worker-urls", *urls, "--policy", policy,
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn", "--prometheus-host",
                "127.0.0.1", "--prometheus-port", str(rig.free_port()), *extra], env
    return [str(SMG_RUST), "launch", "--worker-urls", *urls, "--policy", policy, "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warn", "--prometheus-host", "127.0.0.1",
            "--prometheus-port", str(rig.free_port()), *extra], env


def _get(url: str, method: str = "GET") -> dict:
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    status, body = rig.http_call(int(port), method, path, b"{}" if method == "POST" else None)
    return json.loads(body) if body[:1] in (b"{", b"[") else {}


def pct(xs: list, q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_one(v: Variant, target: str, trace: list, workdir: Path) -> dict:
    kind, _, rest = target.partition(":")
    policy, *extra = rest.split("+")
    flags = []
    for x in extra:
        name, eq, value = x.partition("=")
        flags += ["--" + name] + ([value] if eq else [])
    extra = flags
    if kind == "smg-rust" and not SMG_RUST.exists():
        return {"target": target, "skipped": f"{SMG_RUST} missing"}
    if kind == "sglang-router" and not SGLANG_ROUTER.exists():
        return {"target": target, "skipped": "bash bench/rig/setup_refs.sh sglang-router"}
    fleet, urls = start_fleet(v, workdir, target.replace(":", "-").replace("+", "-"))
    gw = None
    try:
        port = rig.free_port()
        cmd, env = gateway_cmd(kind, policy, extra, port, urls)
        gw = rig.spawn(cmd, workdir / f"{target.replace(':', '-').replace('+', '-')}-{time.monotonic_ns()}.log",
                       None, env)
        probe = json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": "ready?"}],
                            "max_tokens": 1}).encode()
        rig.wait_ready(gw, lambda: rig.http_call(port, "POST", "/v1/chat/completions", probe)[0] == 200,
                       60, target)
        time.sleep(0.5)  # a first load poll
        for u in urls:
            _get(u + "/flush_cache", "POST")
            _get(u + "/_sim/reset", "POST")
        res = asyncio.run(replay(f"http://127.0.0.1:{port}", trace))
        stats = [_get(u + "/_sim/stats") for u in urls]
    finally:
        if gw is not None:
            rig.stop(gw)
        rig.stop(fleet)
    ok = [s for s in res.samples if s.status == 200]
    reqs = [s["requests"] for s in stats]
    prompt = sum(s["prompt_tokens"] for s in stats)
    cached = sum(s["cached_tokens"] for s in stats)
    mean = statistics.mean(reqs) if reqs else 0
    return {"target": target, "requests": len(res.samples), "errors": len(res.samples) - len(ok),
            "hit_rate": cached / prompt if prompt else 0.0,
            "ttft_p50": pct([s.ttft for s in ok], 0.5) * 1e3, "ttft_p99": pct([s.ttft for s in ok], 0.99) * 1e3,
            "e2e_p50": pct([s.e2e for s in ok], 0.5) * 1e3, "e2e_p99": pct([s.e2e for s in ok], 0.99) * 1e3,
            "throughput": len(ok) / res.wall if res.wall else 0.0,
            "imbalance": (max(reqs) / mean) if mean else float("nan"), "per_engine": reqs,
            "evictions": sum(s["evictions"] for s in stats),
            "reported_hit_rate": (sum(s.cached_tokens for s in ok) / sum(s.prompt_tokens for s in ok))
            if ok and sum(s.prompt_tokens for s in ok) else 0.0}


NUMERIC = ("requests", "errors", "hit_rate", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99", "throughput",
           "imbalance", "evictions", "reported_hit_rate")


def median_row(runs: list) -> dict:
    """Per metric, the median over the passes of one target (skipped if any pass was)."""
    skipped = [r for r in runs if "skipped" in r]
    if skipped:
        return skipped[0]
    out = {"target": runs[0]["target"], "passes": runs}
    for k in NUMERIC:
        out[k] = statistics.median(r[k] for r in runs)
    return out


def table(variant: str, v: Variant, rows: list) -> str:
    out = [f"### {variant}: {v.engines} engines, max running {v.sim['max_running']}, "
           f"cache {v.sim['cache_blocks']} blocks of {v.sim['block_size']} tokens", "",
           "| target | requests | errors | hit rate | TTFT p50 ms | TTFT p99 ms | e2e p50 ms | e2e p99 ms "
           "| req/s | imbalance max/mean | evictions |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['target']} | skipped: {r['skipped']} |||||||||")
            continue
        out.append(f"| {r['target']} | {r['requests']} | {r['errors']} | {100 * r['hit_rate']:.1f}% "
                   f"| {r['ttft_p50']:.1f} | {r['ttft_p99']:.1f} | {r['e2e_p50']:.1f} | {r['e2e_p99']:.1f} "
                   f"| {r['throughput']:.1f} | {r['imbalance']:.2f} | {r['evictions']} |")
    return "\n".join(out) + "\n"


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="roomy,pressure,single")
    ap.add_argument("--targets", default=DEFAULT_TARGETS,
                    help="comma list of smg:POLICY[+flag=value...] and smg-rust:POLICY")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--passes", type=int, default=1, help="runs per target (targets interleaved); medians reported")
    ap.add_argument("--out", default="", help="write the Markdown tables to this file")
    ap.add_argument("--json", default="", help="write the raw results to this file")
    a = ap.parse_args(argv)
    results = {}
    md = []
    with tempfile.TemporaryDirectory(prefix="routing-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for name in a.variants.split(","):
                v = VARIANTS[name]
                spec = TraceSpec(**{**asdict(TraceSpec()), "seed": a.seed, **v.trace})
                trace = make_trace(spec)
                targets = a.targets.split(",")
                runs: dict = {t: [] for t in targets}
                for _ in range(a.passes):
                    for t in targets:
                        rig.log(f"{name}: {t}")
                        try:
                            runs[t].append(run_one(v, t, trace, workdir))
                        except RuntimeError as e:
                            runs[t].append({"target": t, "skipped": str(e).splitlines()[0][:120]})
                        rig.log(json.dumps(runs[t][-1]))
                rows = [median_row(runs[t]) for t in targets]
                results[name] = {"variant": asdict(v), "trace": asdict(spec), "rows": rows}
                md.append(table(name, v, rows))
                print(md[-1], flush=True)
        finally:
            rig.stop_all()
    if a.out:
        Path(a.out).write_text("\n".join(md))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
