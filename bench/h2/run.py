#!/usr/bin/env python3
"""HTTP/2 against HTTP/1.1 through one smg-proxy, with h2load; TLS on and off; nginx
as an HTTP/2 → HTTP/1.1 proxy of the same workers for reference.

Layout on a 2-core machine (as bench/rig):
    CPU 0  smg-proxy (``taskset -c 0``; a second one serving TLS, idle while the first
           is measured) and nginx (one worker process)
    CPU 1  h2load (one thread) and the mock workers

Targets, taking turns within each pass (per mode: non-streaming chat, streaming chat):
    smg/h2c      ``h2load -m 10`` (ten streams per connection, prior knowledge)
    smg/h1       ``h2load --h1`` (one request at a time per connection)
    smg-tls/h2   ``h2load -m 10`` over TLS (ALPN h2), a certificate made at run time
    smg-tls/h1   ``h2load --h1`` over TLS (ALPN http/1.1)
    nginx/h2c    nginx (``listen ... http2``, keep-alive upstream) in front of the same
                 workers, ``h2load -m 10`` (skipped when nginx is not installed)
all with ``--clients`` connections for ``--duration`` seconds.

Reported per run: requests/s, h2load's mean request time, the target's CPU share
(process tree, from /proc) and requests/s per core (requests/s over that share, the
figure that still compares when other processes take part of CPU 0); per mode the
medians and the medians of the paired ratios: smg h2c/h1 (per core), smg h2c/nginx
h2c (requests/s and per core), TLS/plain for h2 and h1 (per core). JSON goes to
``bench/results/h2-<time>.json``.

The machine should be idle: the script prints the load average and refuses to run
above ``--max-load`` unless ``--force`` is given (numbers on a busy machine are noise).

Usage:
    python bench/h2/run.py                    # 8 s x 3 passes, both modes, every target
    python bench/h2/run.py --duration 3 --passes 1 --modes nonstream --targets smg/h2c,smg/h1 --force
"""
from __future__ import annotations

import argparse
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
MODEL = "mock-model"
BODIES = {
    "nonstream": {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]},
    "stream": {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": True},
}
PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[h2-bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list, cpu: str, logfile: Path) -> subprocess.Popen:
    out = open(logfile, "ab")
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def tree_cpu_secs(pid: int) -> float:
    """utime + stime of ``pid`` and its children still alive (/proc)."""
    total = 0
    pids = [pid]
    try:
        for line in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.append(int(line))
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def wait_ready(port: int, body: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=body,
                                         headers={"content-type": "application/json"})
            if urllib.request.urlopen(req, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the gateway on port {port} did not answer a chat request in {timeout} s")


_FINISHED = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_REQS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                   r"(\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")


def _ms(v: str) -> float:
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * f
    return float(v)


def h2load(url: str, body_file: str, proto: str, clients: int, duration: int, gw_pid: int, cpu: str) -> dict:
    args = ["--h1"] if proto == "h1" else ["-m", "10"]
    cmd = ["taskset", "-c", cpu, "h2load", "-t", "1", "-c", str(clients), "-D", str(duration), *args,
           "-d", body_file, "-H", "content-type: application/json", url]
    c0 = tree_cpu_secs(gw_pid)
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    wall = time.monotonic() - t0
    cpu_share = (tree_cpu_secs(gw_pid) - c0) / wall
    m = _FINISHED.search(out)
    r = _REQS.search(out)
    s = _STATUS.search(out)
    t = _TIME.search(out)
    rps = float(m.group(1)) if m else 0.0
    res = {"proto": proto, "rps": rps, "gw_cpu_share": round(cpu_share, 3),
           "rps_per_core": round(rps / cpu_share, 1) if cpu_share > 0.05 else None,
           "mean_ms": _ms(t.group(3)) if t else None}
    if r:
        res.update(done=int(r.group(3)), succeeded=int(r.group(4)), failed=int(r.group(5)),
                   errored=int(r.group(6)), timeout=int(r.group(7)))
    if s:
        res["non_2xx"] = int(s.group(2)) + int(s.group(3)) + int(s.group(4))
    res["valid"] = bool(m and r and s and res.get("failed") == 0 and res.get("errored") == 0
                        and res.get("non_2xx") == 0)
    if not res["valid"]:
        res["output"] = out[-2000:]
    return res


TARGETS = ("smg/h2c", "smg/h1", "smg-tls/h2", "smg-tls/h1", "nginx/h2c")


def make_cert(tmp: Path) -> tuple:
    """A self-signed server certificate for 127.0.0.1 (h2load does not verify)."""
    sys.path.insert(0, str(REPO))
    from tests.tlscerts import make_pki

    pki = make_pki(str(tmp))
    return pki.server_cert, pki.server_key


def start_nginx(tmp: Path, port: int, workers: list, cpu: str) -> subprocess.Popen:
    """nginx as an HTTP/2 (h2c, prior knowledge) → HTTP/1.1 proxy of ``workers``, with
    keep-alive upstream connections and no response buffering (answers stream, as
    through the gateway)."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    user = "user root;\n" if os.geteuid() == 0 else ""
    t = tmp / "nginx-tmp"
    t.mkdir(exist_ok=True)
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in workers)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
    uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_requests 100000000;
    upstream workers {{
{servers}        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
    return spawn([exe, "-p", str(tmp), "-c", str(conf)], cpu, tmp / "nginx.log")


def ratio(num: list, den: list, key: str) -> float | None:
    """Median of the paired ratios num[i][key] / den[i][key]."""
    r = [x[key] / y[key] for x, y in zip(num, den) if x.get(key) and y.get(key)]
    return round(statistics.median(r), 3) if r else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", default="nonstream,stream")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"some of {', '.join(TARGETS)}")
    ap.add_argument("--gateway-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--max-load", type=float, default=0.7, help="refuse above this 1-minute load average")
    ap.add_argument("--force", action="store_true", help="run even on a busy machine")
    a = ap.parse_args()
    if shutil.which("h2load") is None:
        log("h2load not found: apt-get install nghttp2-client")
        return 2
    targets = [t for t in a.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        log(f"unknown targets {sorted(unknown)}")
        return 2
    if "nginx/h2c" in targets and not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        log("nginx not installed (bash bench/rig/setup_refs.sh nginx): skipping nginx/h2c")
        targets.remove("nginx/h2c")
    load = os.getloadavg()[0]
    log(f"load average {load:.2f}")
    if load > a.max_load and not a.force:
        log(f"the machine is busy (load {load:.2f} > {a.max_load}): not measuring (--force to run anyway)")
        return 3
    tmp = Path(tempfile.mkdtemp(prefix="smg-h2-bench-"))
    procs = []
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg_start": load, "args": vars(a),
              "targets": targets, "modes": {}}
    try:
        ports = [free_port() for _ in range(a.workers)]
        for i, p in enumerate(ports):
            procs.append(spawn([sys.executable, "-m", "smg.testing.mock_worker", "--port", str(p),
                                "--worker-id", f"w{i + 1}"], a.load_cpu, tmp / f"worker{i}.log"))
        common = ["--worker-urls", *[f"http://127.0.0.1:{p}" for p in ports], "--policy", "round_robin",
                  "--log-level", "warning"]
        pids, urls = {}, {}
        if any(t.startswith("smg/") for t in targets):
            port, prom = free_port(), free_port()
            gw = spawn([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", str(port), *common,
                        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom)],
                       a.gateway_cpu, tmp / "gateway.log")
            procs.append(gw)
            pids["smg"], urls["smg"] = gw.pid, f"http://127.0.0.1:{port}{PATH}"
        if any(t.startswith("smg-tls/") for t in targets):
            cert, key = make_cert(tmp)
            port, prom = free_port(), free_port()
            gw = spawn([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", str(port), *common,
                        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom),
                        "--tls-cert-path", cert, "--tls-key-path", key], a.gateway_cpu, tmp / "gateway-tls.log")
            procs.append(gw)
            pids["smg-tls"], urls["smg-tls"] = gw.pid, f"https://127.0.0.1:{port}{PATH}"
        if "nginx/h2c" in targets:
            port = free_port()
            ng = start_nginx(tmp, port, ports, a.gateway_cpu)
            procs.append(ng)
            pids["nginx"], urls["nginx"] = ng.pid, f"http://127.0.0.1:{port}{PATH}"
        for mode in a.modes.split(","):
            body = json.dumps(BODIES[mode]).encode()
            body_file = tmp / f"{mode}.json"
            body_file.write_bytes(body)
            for name, url in urls.items():
                if name != "smg":  # TLS, or nginx's h2c-only port
                    wait_ready_h2load(url, str(body_file))
                else:
                    wait_ready(int(url.split(":")[2].split("/")[0]), body)
            for t in targets:  # warm-up
                name, proto = t.split("/")
                h2load(urls[name], str(body_file), proto, a.clients, 2, pids[name], a.load_cpu)
            runs = {t: [] for t in targets}
            for n in range(a.passes):
                for t in targets:
                    name, proto = t.split("/")
                    res = h2load(urls[name], str(body_file), proto, a.clients, a.duration, pids[name], a.load_cpu)
                    runs[t].append(res)
                    log(f"{mode} pass {n + 1} {t}: {res['rps']:.0f} req/s, cpu "
                        f"{res['gw_cpu_share'] * 100:.0f}%, {res['rps_per_core']} req/s per core, "
                        f"mean {res['mean_ms']} ms{'' if res['valid'] else ' INVALID'}")
            med = {t: {"rps": statistics.median(r["rps"] for r in rs),
                       "rps_per_core": statistics.median(r["rps_per_core"] or 0 for r in rs)} for t, rs in runs.items()}
            ratios = {}
            pairs = {"smg h2c / smg h1 (per core)": ("smg/h2c", "smg/h1", "rps_per_core"),
                     "smg h2c / nginx h2c (req/s)": ("smg/h2c", "nginx/h2c", "rps"),
                     "smg h2c / nginx h2c (per core)": ("smg/h2c", "nginx/h2c", "rps_per_core"),
                     "smg h2 TLS / h2c (per core)": ("smg-tls/h2", "smg/h2c", "rps_per_core"),
                     "smg h1 TLS / h1 (per core)": ("smg-tls/h1", "smg/h1", "rps_per_core"),
                     "smg h2 TLS / h1 TLS (per core)": ("smg-tls/h2", "smg-tls/h1", "rps_per_core")}
            for label, (x, y, key) in pairs.items():
                if x in runs and y in runs:
                    ratios[label] = ratio(runs[x], runs[y], key)
            report["modes"][mode] = {"runs": runs, "median": med, "paired_ratios": ratios,
                                     "valid": all(r["valid"] for rs in runs.values() for r in rs)}
    finally:
        for p in reversed(procs):
            stop(p)
    report["load_avg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"h2-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"{'mode':10} {'target':11} {'median req/s':>13} {'req/s per core':>15}")
    for mode, r in report["modes"].items():
        for t, m in r["median"].items():
            print(f"{mode:10} {t:11} {m['rps']:13.0f} {m['rps_per_core']:15.0f}")
        for label, v in r["paired_ratios"].items():
            print(f"{mode:10} {label}: {v}")
        if not r["valid"]:
            print(f"{mode:10} INVALID runs: see the JSON")
    print(f"JSON: {path}")
    return 0 if all(r["valid"] for r in report["modes"].values()) else 1


def wait_ready_h2load(url: str, body_file: str, timeout: float = 30.0) -> None:
    """The target answers a chat request through h2load (which speaks h2c and does not
    verify certificates)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["h2load", "-n", "1", "-c", "1", "-d", body_file, "-H", "content-type: application/json",
                              url], capture_output=True, text=True, timeout=30).stdout
        if "1 succeeded" in out and "1 2xx" in out:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer a chat request in {timeout} s")


if __name__ == "__main__":
    sys.exit(main())
