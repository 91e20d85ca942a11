#!/usr/bin/env python3
"""Gateway-vs-gateway comparison: throughput (64 connections) and added latency (1 connection).

Layout on a 2-core machine (see bench/README.md):
    CPU 0  the gateway under test (one at a time is loaded; the others sit idle)
    CPU 1  the load side: wrk and the backends (K mock workers, or one nginx)

For each mode (non-streaming chat, streaming chat) the rig starts the backends and every
gateway, then runs ``--passes`` passes; in each pass every target gets a ``--duration``
throughput run with ``--connections`` connections and a 1-connection latency run,
targets interleaved (A B A B ...) so that machine drift hits them alike. It reports the
median over passes, the ratio of medians and the median of the per-pass (paired) ratios.

A run is invalid when wrk saw any non-2xx answer or socket error; an invalid run is
kept in the JSON and flagged in the table.

``direct`` sends wrk straight to the first backend: it is the ceiling of the load side,
not a gateway. If a gateway gets close to it, the load side is the bottleneck and the
comparison says little: the rig warns, and ``--backend nginx`` swaps the Python mock
workers for nginx serving canned bodies.

Usage:
    bash bench/rig/setup_refs.sh                       # wrk + the Rust SMG venv
    python bench/rig/compare.py                        # direct, smg-rust, smg-proxy; 10 s x 3 passes
    python bench/rig/compare.py --targets direct,smg-rust --duration 3 --passes 2
    python bench/rig/compare.py --backend nginx --modes nonstream
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"

MODEL = "mock-model"
BODIES = {
    "nonstream": {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]},
    "stream": {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": True},
}
PATH = "/v1/chat/completions"


def log(msg: str) -> None:
    print(f"[rig] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

_procs: list = []


def spawn(cmd: list, logfile: Path, cpu: str | None, env: dict | None = None) -> subprocess.Popen:
    """Starts ``cmd`` in its own process group (so it and its children stop together)."""
    full = (["taskset", "-c", cpu] if cpu is not None else []) + cmd
    out = open(logfile, "ab")
    p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    out.close()
    p.logfile = logfile  # type: ignore[attr-defined]
    p.cmdline = full  # type: ignore[attr-defined]
    _procs.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the process group we created for ``p``, then SIGKILL after ``grace``."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(grace)
    else:
        # The leader exited; children it left in its group (nginx workers) still go.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    if p in _procs:
        _procs.remove(p)


def stop_all() -> None:
    for p in list(reversed(_procs)):
        stop(p)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 2.0) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + RIG_API_KEY} \
            if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_ready(p: subprocess.Popen | None, check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if p is not None and p.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.returncode}:\n{tail(p.logfile)}")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.2)
    log_tail = tail(p.logfile) if p is not None else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s (last error: {last})\n{log_tail}")


# --------------------------------------------------------------------------- CPU accounting


def cpu_times() -> dict:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[m.group(1)] = (sum(v) - idle, sum(v))
    return out


def cpu_busy(before: dict, after: dict) -> dict:
    res = {}
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (0, 0))
        res[cpu] = round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else None
    return res


def tree_jiffies(root: int) -> int:
    """utime+stime of ``root`` and its descendants (all threads)."""
    parents: dict = {}
    times: dict = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(")") + 2:].split()
        pid = int(stat.split("/")[2])
        parents[pid] = int(rest[1])
        times[pid] = int(rest[11]) + int(rest[12])
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += times.get(pid, 0)
        todo += [c for c, pp in parents.items() if pp == pid]
    return total


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out: str) -> dict:
    def num(pattern: str, cast=float, default=None):
        m = re.search(pattern, out, re.M)
        return cast(m.group(1)) if m else default

    res: dict = {
        "rps": num(r"^Requests/sec:\s+([\d.]+)"),
        "requests": num(r"^\s*(\d+) requests in", int, 0),
        "non_2xx": num(r"Non-2xx or 3xx responses: (\d+)", int, 0),
    }
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{pct}_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 4) if m else None
    errors = sum(res["socket_errors"].values()) + res["non_2xx"]
    res["valid"] = bool(res["rps"]) and res["requests"] > 0 and errors == 0
    return res


def run_wrk(url: str, script: Path, connections: int, duration: float, cpu: str | None,
            gateway: subprocess.Popen | None) -> dict:
    cmd = (["taskset", "-c", cpu] if cpu is not None else []) + [
        "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s", "-s", str(script), url]
    c0, g0 = cpu_times(), tree_jiffies(gateway.pid) if gateway is not None else 0
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = f"wrk timed out: {e}"
    elapsed = time.monotonic() - t0
    res = parse_wrk(out)
    res["cpu_busy_pct"] = cpu_busy(c0, cpu_times())
    if gateway is not None:
        pct = 100.0 * (tree_jiffies(gateway.pid) - g0) / os.sysconf("SC_CLK_TCK") / elapsed
        res["gateway_cpu_pct"] = round(pct, 1)
        # Throughput per CPU-second the gateway actually got: on a shared machine other
        # processes take part of the gateway's core, and this is what survives that.
        res["rps_per_core"] = round(res["rps"] / (pct / 100.0)) if res["rps"] and pct > 1 else None
    if not res["valid"]:
        res["wrk_output"] = out[-2000:]
    return res


# Every request carries this bearer key (as an OpenAI SDK client does), so that a target
# with authentication on (smg-proxy-secured) is measured on the same requests.
RIG_API_KEY = "sk-rig-0123456789abcdef"


def lua_script(path: Path, body: dict) -> Path:
    payload = json.dumps(body, separators=(",", ":"))
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{payload}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {RIG_API_KEY}"\n')
    return path


def prefix_bodies(stream: bool, conversations: int = 500, prompts: int = 50, prompt_chars: int = 7600,
                  seed: int = 7) -> list:
    """~8 KB chat bodies: one of ``prompts`` shared system prompts plus a short unique
    user turn (the cache_aware workload of issue 3)."""
    import random

    rng = random.Random(seed)
    words = ["gateway", "token", "cache", "prefix", "route", "worker", "model", "stream", "batch", "kernel",
             "tensor", "decode", "prefill", "latency", "policy", "replica", "shard", "queue"]
    systems = []
    for i in range(prompts):
        text = f"System prompt {i}: you are assistant number {i}. "
        while len(text) < prompt_chars:
            text += rng.choice(words) + " "
        systems.append(text)
    out = []
    for j in range(conversations):
        body = {"model": MODEL, "messages": [{"role": "system", "content": systems[j % prompts]},
                                             {"role": "user", "content": f"question {j}: " + " ".join(
                                                 rng.choice(words) for _ in range(12))}]}
        if stream:
            body["stream"] = True
        out.append(json.dumps(body, separators=(",", ":")))
    return out


def lua_multi_script(path: Path, bodies: list) -> Path:
    """A wrk script sending one of ``bodies`` (chosen at random) per request."""
    items = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        "local bodies = {\n" + items + "\n}\n"
        "local headers = {[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer "
        + RIG_API_KEY + "\"}\n"
        "request = function()\n"
        "  return wrk.format(\"POST\", nil, headers, bodies[math.random(#bodies)])\n"
        "end\n")
    return path


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    ports: list
    procs: list = field(default_factory=list)

    @property
    def urls(self) -> list:
        return [f"http://127.0.0.1:{p}" for p in self.ports]


def start_mock_backend(k: int, cpu: str | None, workdir: Path, num_chunks: int) -> Backend:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    b = Backend([free_port() for _ in range(k)])
    for i, port in enumerate(b.ports):
        b.procs.append(spawn([sys.executable, "-m", "smg.testing.mock_worker", "--host", "127.0.0.1",
                              "--port", str(port), "--worker-id", f"w{i}", "--model", MODEL,
                              "--num-chunks", str(num_chunks)], workdir / f"mock-{i}.log", cpu, env))
    for p, port in zip(b.procs, b.ports):
        wait_ready(p, lambda port=port: http_call(port, "GET", "/health")[0] == 200, 30, f"mock worker :{port}")
    return b


def _nginx_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("$", "${dollar}") + "'"


def _canned_chat(stream: bool, num_chunks: int) -> str:
    created = int(time.time())
    words = ["Hello", " from", " nginx", " canned", " backend", "."]
    toks = [words[i % len(words)] for i in range(num_chunks)]
    base = {"id": "chatcmpl-nginx", "created": created, "model": MODEL}
    if not stream:
        return json.dumps({**base, "object": "chat.completion",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(toks)},
                                        "logprobs": None, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 9, "completion_tokens": len(toks),
                                     "total_tokens": 9 + len(toks)}}, separators=(",", ":"))

    def ck(delta: dict, finish=None) -> str:
        return "data: " + json.dumps({**base, "object": "chat.completion.chunk",
                                      "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish}]}, separators=(",", ":")) + "\n\n"

    return (ck({"role": "assistant", "content": ""}) + "".join(ck({"content": t}) for t in toks)
            + ck({}, "stop") + "data: [DONE]\n\n")


def nginx_bin() -> str | None:
    return shutil.which("nginx") or (("/usr/sbin/nginx") if os.path.exists("/usr/sbin/nginx") else None)


def _nginx_conf(workdir: Path, name: str, servers: str) -> Path:
    user = "user root;\n" if os.geteuid() == 0 else ""
    tmp = workdir / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    geo $dollar {{ default "$"; }}
{servers}
}}
""")
    return conf


def start_nginx_backend(k: int, cpu: str | None, workdir: Path, mode: str, num_chunks: int) -> Backend:
    exe = nginx_bin()
    if exe is None:
        raise RuntimeError("nginx not installed: bash bench/rig/setup_refs.sh nginx")
    b = Backend([free_port() for _ in range(k)])
    stream = mode == "stream"
    info = json.dumps({"model_path": MODEL, "tokenizer_path": MODEL, "served_model_name": MODEL,
                       "is_generation": True, "dp_size": 1, "context_length": 32768})
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                      "owned_by": "sglang"}]})
    loads = json.dumps({"timestamp": 0, "dp_rank_count": 1, "loads": [
        {"dp_rank": 0, "num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0,
         "max_total_num_tokens": 524288, "token_usage": 0.0}]})
    listens = "".join(f"        listen 127.0.0.1:{p} backlog=4096;\n" for p in b.ports)
    servers = f"""    server {{
{listens}        default_type application/json;
        location = {PATH} {{
            default_type {"text/event-stream" if stream else "application/json"};
            return 200 {_nginx_str(_canned_chat(stream, num_chunks))};
        }}
        location = /health {{ return 200 ''; }}
        location = /health_generate {{ return 200 ''; }}
        location = /v1/models {{ return 200 {_nginx_str(models)}; }}
        location ~ ^/(get_)?(server|model)_info$ {{ return 200 {_nginx_str(info)}; }}
        location = /v1/loads {{ return 200 {_nginx_str(loads)}; }}
        location = /metrics {{ default_type text/plain; return 200 ''; }}
        location / {{ return 404 '{{"error":{{"message":"not found"}}}}'; }}
    }}"""
    conf = _nginx_conf(workdir, f"nginx-backend-{mode}", servers)
    p = spawn([exe, "-p", str(workdir), "-c", str(conf)], workdir / f"nginx-backend-{mode}.log", cpu)
    b.procs.append(p)
    for port in b.ports:
        wait_ready(p, lambda port=port: http_call(port, "GET", "/health")[0] == 200, 15, f"nginx backend :{port}")
    return b


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A gateway (or ``direct``). ``command`` returns the argv for (port, worker urls, workdir)."""

    name: str
    describe: str
    available: Callable[[], str | None]  # None when usable, else why not
    command: Callable[[int, list, Path], list] | None = None
    startup_timeout: float = 60.0
    # Only our own code may see this checkout on PYTHONPATH: PyPI's `smg` (the Rust SMG)
    # has the same import name and would import ours instead of itself (style.md H1).
    repo_on_path: bool = False
    # Another checkout of this repo (``--base-checkout``), put on PYTHONPATH instead.
    other_checkout: bool = False


def _venv_bin(venv: str, exe: str) -> Path:
    return VENVS / venv / "bin" / exe


def _need(path: Path, setup: str) -> Callable[[], str | None]:
    return lambda: None if path.exists() else f"{path} missing: bash bench/rig/setup_refs.sh {setup}"


def _smg_proxy_argv() -> list:
    exe = shutil.which("smg-proxy")
    return [exe] if exe else [sys.executable, "-m", "smg"]


def _smg_proxy_available() -> str | None:
    if shutil.which("smg-proxy"):
        return None
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", "import smg.cli"], env=env, capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else "smg-proxy not installed and smg.cli not importable: " + \
        (r.stderr.strip().splitlines() or ["?"])[-1]


POLICY = {"name": "round_robin"}  # set from --policy
BASE = {"dir": None}              # set from --base-checkout


def _smg_base_available() -> str | None:
    d = BASE["dir"]
    if d is None:
        return "no --base-checkout given"
    r = subprocess.run([sys.executable, "-c", "import smg.cli"], env=dict(os.environ, PYTHONPATH=str(d)),
                       capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else f"{d}: smg.cli not importable"


def _smg_base_cmd(port: int, urls: list, workdir: Path) -> list:
    # the same flags as smg-proxy, run from the other checkout (PYTHONPATH set by start_gateway)
    return [sys.executable, "-m", "smg"] + _smg_proxy_cmd(port, urls, workdir)[len(_smg_proxy_argv()):]


def _smg_proxy_cmd(port: int, urls: list, workdir: Path) -> list:
    # The metrics listener stays on (as for smg-rust) but on loopback and a free port.
    return _smg_proxy_argv() + ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls,
                                "--policy", POLICY["name"], "--log-level", "warning",
                                "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


def _smg_proxy_obs_cmd(port: int, urls: list, workdir: Path) -> list:
    # Observability fully on: metrics and one access-log line per request (to a file).
    return _smg_proxy_argv() + ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls,
                                "--policy", POLICY["name"], "--log-level", "info",
                                "--log-dir", str(workdir / f"smg-obs-{port}"),
                                "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


def _smg_proxy_bare_cmd(port: int, urls: list, workdir: Path) -> list:
    # Observability off: no metrics, no access log.
    return _smg_proxy_argv() + ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls,
                                "--policy", POLICY["name"], "--log-level", "warning", "--disable-metrics"]


def _smg_proxy_open_cmd(port: int, urls: list, workdir: Path) -> list:
    # no authentication and no admission (SMG 1.13's default limiter turned off)
    return _smg_proxy_cmd(port, urls, workdir) + ["--max-concurrent-requests", "0"]


def _smg_proxy_apikey_cmd(port: int, urls: list, workdir: Path) -> list:
    # the gateway's API key only (no admission)
    return _smg_proxy_open_cmd(port, urls, workdir) + ["--api-key", RIG_API_KEY]


def _smg_proxy_secured_cmd(port: int, urls: list, workdir: Path) -> list:
    # the full set configured but not binding: the gateway's API key, tenant rate limits
    # (limits far above the load) and the default concurrency limiter
    conf = workdir / "tenant-limits.yaml"
    conf.write_text("default_policy:\n  requests_per_minute: 100000000\n  tokens_per_minute: 500000000\n")
    return _smg_proxy_cmd(port, urls, workdir) + ["--api-key", RIG_API_KEY, "--tenant-rate-limit-enabled",
                                                  "--tenant-rate-limit-config", str(conf)]


def _smg_rust_cmd(port: int, urls: list, workdir: Path) -> list:
    # Flags per `smg launch --help` (1.13): quiet logs (its INFO level logs every request),
    # the Prometheus listener (on by default, 0.0.0.0:29000) moved to loopback on a free port.
    # Health checks, retries, circuit breaker and load monitoring stay at their defaults (a
    # health probe per 60 s and a load poll per 10 s do not show in a 10 s run).
    return [str(_venv_bin("smg-rust", "smg")), "launch", "--worker-urls", *urls, "--policy", POLICY["name"],
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


def _sglang_router_cmd(port: int, urls: list, workdir: Path) -> list:
    return [str(_venv_bin("sglang-router", "python")), "-m", "sglang_router.launch_router", "--worker-urls", *urls,
            "--policy", "round_robin", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


def _vllm_router_cmd(port: int, urls: list, workdir: Path) -> list:
    return [str(_venv_bin("vllm-router", "vllm-router")), "--worker-urls", *urls, "--policy", "round_robin",
            "--host", "127.0.0.1", "--port", str(port)]


def _litellm_cmd(port: int, urls: list, workdir: Path) -> list:
    conf = workdir / "litellm.yaml"
    models = "".join(f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                     f"      api_base: {u}/v1\n      api_key: unused\n" for u in urls)
    conf.write_text("model_list:\n" + models + "router_settings:\n  routing_strategy: simple-shuffle\n"
                    "litellm_settings:\n  drop_params: true\n")
    return [str(_venv_bin("litellm", "litellm")), "--config", str(conf), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]


def _nginx_proxy_cmd(port: int, urls: list, workdir: Path) -> list:
    ups = "".join(f"        server {u[len('http://'):]};\n" for u in urls)
    servers = f"""    upstream workers {{
{ups}        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}"""
    conf = _nginx_conf(workdir, f"nginx-proxy-{port}", servers)
    return [nginx_bin() or "nginx", "-p", str(workdir), "-c", str(conf)]


TARGETS = {
    "direct": Target("direct", "wrk straight to the first backend (the load side's ceiling)", lambda: None),
    "smg-proxy": Target("smg-proxy", "this repo's gateway", _smg_proxy_available, _smg_proxy_cmd,
                        repo_on_path=True),
    "smg-proxy-obs": Target("smg-proxy-obs", "this repo's gateway, metrics + access log on",
                            _smg_proxy_available, _smg_proxy_obs_cmd, repo_on_path=True),
    "smg-proxy-bare": Target("smg-proxy-bare", "this repo's gateway, metrics and access log off",
                             _smg_proxy_available, _smg_proxy_bare_cmd, repo_on_path=True),
    "smg-proxy-open": Target("smg-proxy-open", "this repo's gateway without auth or admission",
                             _smg_proxy_available, _smg_proxy_open_cmd, repo_on_path=True),
    "smg-proxy-apikey": Target("smg-proxy-apikey", "this repo's gateway: API key, no admission",
                               _smg_proxy_available, _smg_proxy_apikey_cmd, repo_on_path=True),
    "smg-proxy-secured": Target("smg-proxy-secured", "this repo's gateway: API key + tenant limits + limiter",
                                _smg_proxy_available, _smg_proxy_secured_cmd, repo_on_path=True),
    "smg-proxy-base": Target("smg-proxy-base", "this repo's gateway from --base-checkout (before/after runs)",
                             _smg_base_available, _smg_base_cmd, other_checkout=True),
    "smg-rust": Target("smg-rust", "Shepherd Model Gateway (PyPI smg, Rust)",
                       _need(_venv_bin("smg-rust", "smg"), "smg-rust"), _smg_rust_cmd),
    "nginx": Target("nginx", "nginx reverse proxy, upstream keepalive (a floor for proxy overhead)",
                    lambda: None if nginx_bin() else "nginx missing: bash bench/rig/setup_refs.sh nginx",
                    _nginx_proxy_cmd),
    "sglang-router": Target("sglang-router", "sglang-router (PyPI, Rust) [untested]",
                            _need(_venv_bin("sglang-router", "python"), "sglang-router"), _sglang_router_cmd),
    "vllm-router": Target("vllm-router", "vllm-router (PyPI, Rust) [untested]",
                          _need(_venv_bin("vllm-router", "vllm-router"), "vllm-router"), _vllm_router_cmd),
    "litellm": Target("litellm", "LiteLLM proxy (Python) [untested]",
                      _need(_venv_bin("litellm", "litellm"), "litellm"), _litellm_cmd, startup_timeout=120),
}


def start_gateway(t: Target, urls: list, cpu: str | None, workdir: Path, body: bytes) -> tuple:
    port = free_port()
    env = dict(os.environ)
    if t.other_checkout:
        env["PYTHONPATH"] = str(BASE["dir"])
    elif t.repo_on_path:
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    else:
        env.pop("PYTHONPATH", None)
    p = spawn(t.command(port, urls, workdir), workdir / f"{t.name}.log", cpu, env)

    def ok() -> bool:
        # Ready = a real inference request through the gateway succeeds (workers registered).
        return http_call(port, "POST", PATH, body)[0] == 200

    wait_ready(p, ok, t.startup_timeout, t.name)
    return p, port


# --------------------------------------------------------------------------- the run


def median(xs: list):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_mode(mode: str, targets: list, args: argparse.Namespace, workdir: Path) -> dict:
    if args.workload == "prefix8k":
        bodies = prefix_bodies(mode == "stream")
        body = bodies[0].encode()
        script = lua_multi_script(workdir / f"{mode}.lua", bodies)
    else:
        body = json.dumps(BODIES[mode], separators=(",", ":")).encode()
        script = lua_script(workdir / f"{mode}.lua", BODIES[mode])
    if args.backend == "nginx":
        backend = start_nginx_backend(args.workers, args.load_cpu, workdir, mode, args.num_chunks)
    else:
        backend = start_mock_backend(args.workers, args.load_cpu, workdir, args.num_chunks)
    result: dict = {"targets": {}, "skipped": {}}
    gateways: dict = {}
    try:
        for t in targets:
            if t.command is None:
                gateways[t.name] = (None, backend.ports[0])
                continue
            try:
                gateways[t.name] = start_gateway(t, backend.urls, args.gateway_cpu, workdir, body)
                log(f"{mode}: {t.name} ready on :{gateways[t.name][1]}")
            except RuntimeError as e:
                log(f"{mode}: {t.name} failed to start, skipped: {e}")
                result["skipped"][t.name] = f"failed to start: {str(e).splitlines()[0]}"
        live = [t for t in targets if t.name in gateways]
        for t in live:
            result["targets"][t.name] = {"passes": [], "latency": []}
        if args.warmup > 0:
            for t in live:
                proc, port = gateways[t.name]
                run_wrk(f"http://127.0.0.1:{port}{PATH}", script, args.connections, args.warmup, args.load_cpu, proc)
        for i in range(args.passes):
            for t in live:
                proc, port = gateways[t.name]
                url = f"http://127.0.0.1:{port}{PATH}"
                r = run_wrk(url, script, args.connections, args.duration, args.load_cpu, proc)
                result["targets"][t.name]["passes"].append(r)
                lat = run_wrk(url, script, 1, args.latency_duration, args.load_cpu, proc) \
                    if args.latency_duration > 0 else None
                if lat is not None:
                    result["targets"][t.name]["latency"].append(lat)
                log(f"{mode} pass {i + 1}/{args.passes} {t.name:<13} {r['rps'] or 0:>10.0f} req/s"
                    + ("" if r["valid"] else "  INVALID")
                    + (f"   1-conn p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms" if lat else "")
                    + (f"   gateway cpu {r.get('gateway_cpu_pct')}%" if proc is not None else ""))
    finally:
        for proc, _ in gateways.values():
            if proc is not None:
                stop(proc)
        for p in backend.procs:
            stop(p)
    summarize(result)
    return result


def summarize(result: dict) -> None:
    ts = result["targets"]
    for t in ts.values():
        t["median_rps"] = median([p["rps"] for p in t["passes"]])
        t["median_p50_ms"] = median([p["p50_ms"] for p in t["latency"]])
        t["median_p99_ms"] = median([p["p99_ms"] for p in t["latency"]])
        t["median_gateway_cpu_pct"] = median([p.get("gateway_cpu_pct") for p in t["passes"]])
        t["median_rps_per_core"] = median([p.get("rps_per_core") for p in t["passes"]])
        t["valid"] = all(p["valid"] for p in t["passes"] + t["latency"])
    ratios: dict = {}

    def ratio(a: str, b: str) -> None:
        if a in ts and b in ts and ts[a]["median_rps"] and ts[b]["median_rps"]:
            paired = [x["rps"] / y["rps"] for x, y in zip(ts[a]["passes"], ts[b]["passes"]) if x["rps"] and y["rps"]]
            ratios[f"{a}/{b}"] = {"of_medians": round(ts[a]["median_rps"] / ts[b]["median_rps"], 4),
                                  "median_paired": round(median(paired), 4) if paired else None}
            if ts[a]["median_rps_per_core"] and ts[b]["median_rps_per_core"]:
                ratios[f"{a}/{b}"]["per_core"] = round(ts[a]["median_rps_per_core"] / ts[b]["median_rps_per_core"], 4)

    ratio("smg-proxy", "smg-rust")
    ratio("smg-proxy", "nginx")
    ratio("smg-proxy-base", "smg-rust")
    ratio("smg-proxy-base", "nginx")
    ratio("smg-proxy", "smg-proxy-base")  # a change against its base, same run
    ratio("smg-proxy-secured", "smg-proxy-open")  # what auth + limits cost when they do not bind
    ratio("smg-proxy", "smg-proxy-open")  # what the default limiter costs
    ratio("smg-proxy-apikey", "smg-proxy-open")  # what the API key check costs
    ratio("smg-proxy-obs", "smg-proxy-bare")  # the cost of metrics + access logs
    for name in ts:
        if name != "direct":
            ratio(name, "direct")
    result["ratios"] = ratios
    added = {}
    if "direct" in ts and ts["direct"]["median_p50_ms"] is not None:
        for name, t in ts.items():
            if name != "direct" and t["median_p50_ms"] is not None:
                added[name] = {"p50_ms": round(t["median_p50_ms"] - ts["direct"]["median_p50_ms"], 4),
                               "p99_ms": round(t["median_p99_ms"] - ts["direct"]["median_p99_ms"], 4)
                               if t["median_p99_ms"] is not None and ts["direct"]["median_p99_ms"] is not None
                               else None}
    result["added_latency_vs_direct"] = added
    warnings = []
    d = ts.get("direct", {}).get("median_rps")
    if d:
        for name, t in ts.items():
            if name != "direct" and t["median_rps"] and t["median_rps"] >= 0.8 * d:
                warnings.append(f"{name} reaches {t['median_rps'] / d:.0%} of direct: the load side (wrk + "
                                f"backends on one CPU) is likely the bottleneck; try --backend nginx")
    for name, t in ts.items():
        if not t["valid"]:
            warnings.append(f"{name}: some runs had non-2xx answers or socket errors (marked INVALID)")
    result["warnings"] = warnings


def print_table(mode: str, result: dict, args: argparse.Namespace) -> None:
    ts = result["targets"]
    print(f"\n== {mode}: {args.connections} connections, {args.duration:g} s x {args.passes} passes, "
          f"backend {args.backend} x{args.workers} ==")
    cols = [f"pass{i + 1}" for i in range(args.passes)]
    print(f"{'target':<14}" + "".join(f"{c:>10}" for c in cols)
          + f"{'median':>10}{'/direct':>9}{'gw cpu%':>9}{'rps/core':>10}{'p50 1c':>9}{'p99 1c':>9}{'+p50 ms':>9}"
          + "  valid")
    d = ts.get("direct", {}).get("median_rps")
    added = result.get("added_latency_vs_direct", {})
    for name, t in ts.items():
        rps = "".join(f"{(p['rps'] or 0):>10.0f}" + ("" if p["valid"] else "!") for p in t["passes"])
        rel = f"{t['median_rps'] / d:>9.2f}" if d and t["median_rps"] else f"{'':>9}"
        cpu = f"{t['median_gateway_cpu_pct']:>9.0f}" if t["median_gateway_cpu_pct"] is not None else f"{'':>9}"
        cpu += f"{t['median_rps_per_core']:>10.0f}" if t["median_rps_per_core"] else f"{'':>10}"
        p50 = f"{t['median_p50_ms']:>9.3f}" if t["median_p50_ms"] is not None else f"{'':>9}"
        p99 = f"{t['median_p99_ms']:>9.3f}" if t["median_p99_ms"] is not None else f"{'':>9}"
        add = f"{added[name]['p50_ms']:>9.3f}" if name in added else f"{'':>9}"
        print(f"{name:<14}{rps}{(t['median_rps'] or 0):>10.0f}{rel}{cpu}{p50}{p99}{add}  "
              f"{'yes' if t['valid'] else 'NO'}")
    for k, v in result.get("ratios", {}).items():
        print(f"  ratio {k:<22} of medians {v['of_medians']:.3f}   median of paired passes "
              f"{v['median_paired'] if v['median_paired'] is not None else '-'}"
              + (f"   per core {v['per_core']:.3f}" if "per_core" in v else ""))
    for name, why in result.get("skipped", {}).items():
        print(f"  skipped {name}: {why}")
    for w in result.get("warnings", []):
        print(f"  WARNING: {w}")


def versions() -> dict:
    v: dict = {"python": sys.version.split()[0]}
    with contextlib.suppress(Exception):
        v["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5).stdout.split()[1]
    for d in glob.glob(str(VENVS / "smg-rust" / "lib" / "python*" / "site-packages" / "smg-*.dist-info")):
        v["smg-rust"] = Path(d).name[len("smg-"):-len(".dist-info")]
    with contextlib.suppress(Exception):
        sys.path.insert(0, str(REPO))
        from smg._version import __version__
        v["smg-proxy"] = __version__
    with contextlib.suppress(Exception):
        v["nginx"] = subprocess.run([nginx_bin() or "nginx", "-v"], capture_output=True, text=True,
                                    timeout=5).stderr.strip().split("/")[-1]
    return v


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="direct,smg-rust,smg-proxy",
                    help=f"comma list from: {', '.join(TARGETS)} (default: %(default)s)")
    ap.add_argument("--modes", default="nonstream,stream", help="comma list: nonstream, stream (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run (default: 10)")
    ap.add_argument("--passes", type=int, default=3, help="interleaved passes (default: 3)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    ap.add_argument("--latency-duration", type=float, default=5.0,
                    help="seconds per 1-connection latency run, 0 to skip (default: 5)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded warm-up per target (default: 2)")
    ap.add_argument("--workers", type=int, default=2, help="backends (mock workers / nginx ports) (default: 2)")
    ap.add_argument("--backend", choices=["mock", "nginx"], default="mock",
                    help="mock: smg.testing.mock_worker processes; nginx: canned bodies (default: mock)")
    ap.add_argument("--num-chunks", type=int, default=8, help="tokens per answer (default: 8)")
    ap.add_argument("--policy", default="round_robin", help="routing policy for smg-proxy and smg-rust")
    ap.add_argument("--workload", choices=["hello", "prefix8k"], default="hello",
                    help="hello: one tiny chat body; prefix8k: ~8 KB bodies from 50 shared system prompts")
    ap.add_argument("--gateway-cpu", default="0", help="CPU list for gateways, '' = no pinning (default: 0)")
    ap.add_argument("--load-cpu", default="1", help="CPU list for wrk and backends, '' = no pinning (default: 1)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: bench/results/compare-<time>.json)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the gateways' logs (path printed)")
    ap.add_argument("--base-checkout", type=Path, default=None,
                    help="another checkout of this repo (built in place) for the smg-proxy-base target")
    args = ap.parse_args(argv)
    POLICY["name"] = args.policy
    BASE["dir"] = args.base_checkout.resolve() if args.base_checkout else None

    if shutil.which("wrk") is None:
        ap.error("wrk not found: bash bench/rig/setup_refs.sh wrk")
    if args.passes < 1 or args.duration <= 0 or args.connections < 1 or args.workers < 1:
        ap.error("--passes, --duration, --connections and --workers must be positive")
    ncpu = os.cpu_count() or 1
    if not shutil.which("taskset") or ncpu < 2:
        log(f"{ncpu} CPU(s) or no taskset: running unpinned (gateway and load side compete)")
        args.gateway_cpu = args.load_cpu = ""
    args.gateway_cpu = args.gateway_cpu or None
    args.load_cpu = args.load_cpu or None

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in BODIES:
            ap.error(f"unknown mode {m!r}")
    targets, skipped = [], {}
    for name in [n.strip() for n in args.targets.split(",") if n.strip()]:
        t = TARGETS.get(name)
        if t is None:
            ap.error(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        why = t.available()
        if why:
            log(f"skipping {name}: {why}")
            skipped[name] = why
        else:
            targets.append(t)
    if not targets:
        ap.error("no target available")

    workdir = Path(tempfile.mkdtemp(prefix="smg-rig-"))
    report: dict = {"meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
                             "cpus": ncpu, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in vars(args).items()},
                             "versions": versions(), "skipped": skipped,
                             "layout": {"gateway_cpu": args.gateway_cpu, "load_cpu": args.load_cpu}},
                    "modes": {}}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for mode in modes:
            report["modes"][mode] = run_mode(mode, targets, args, workdir)
            print_table(mode, report["modes"][mode], args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    out = args.out or RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    valid = all(t["valid"] for m in report["modes"].values() for t in m["targets"].values())
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
