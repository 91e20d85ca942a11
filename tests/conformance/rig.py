"""The processes of the conformance suite: the Rust SMG, smg-proxy, and the workers both front.

Rules:
- Everything runs as a child process on 127.0.0.1, on ports picked free at start-up
  (bind to port 0, release, hand the number over), so two sessions never collide.
- Start order: the workers first (each prints a ``listening on`` line once it
  accepts), then both gateways with the same flags; a gateway is up when
  ``/readiness`` answers 200 with every worker healthy and ``/v1/models`` lists every
  model. Every wait is bounded (``START_TIMEOUT``); a process that dies or never
  comes up fails the session with the tail of its log.
- ``stop`` ends exactly the processes this rig started, by their pid: SIGTERM to all,
  then SIGKILL to any still running ``STOP_GRACE`` seconds later (the Rust SMG drains
  for longer than that). It runs even when a start fails half way.
- The Rust binary is ``$SMG_RUST_BIN`` or ``bench/.venvs/smg-rust/bin/smg``; it is only
  ever executed, never imported (PyPI ``smg`` is a different top-level package of
  the same name).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tests.conformance.client import Response, request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RUST_BIN = os.path.join(ROOT, "bench", ".venvs", "smg-rust", "bin", "smg")
START_TIMEOUT = 45.0  # Python start-up plus worker registration; both take a few seconds here
STOP_GRACE = 5.0
MOCK_MODEL = "mock-model"
ECHO_MODEL = "echo-model"
EXTRA_MODEL = "extra-model"  # the worker the Workers API cases register and remove


def rust_binary() -> str | None:
    """The Rust SMG executable, or None when it is not installed."""
    path = os.environ.get("SMG_RUST_BIN") or DEFAULT_RUST_BIN
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def free_ports(n: int) -> list:
    """``n`` distinct ports free right now (all held open until all are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ours_command() -> list[str]:
    """``python -m smg launch`` when that subcommand exists, else ``python -m smg``."""
    probe = subprocess.run([sys.executable, "-m", "smg", "launch", "--help"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return [sys.executable, "-m", "smg", "launch"] if probe.returncode == 0 else [sys.executable, "-m", "smg"]


@dataclass
class Proc:
    name: str
    argv: list
    log_path: str
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "wb")
        try:
            self.popen = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        p = self.popen
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Waits for the process until ``deadline`` (monotonic), then kills it."""
        p = self.popen
        if p is None:
            return
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(STOP_GRACE)


@dataclass
class Gateway:
    """One gateway under test: its main port and its Prometheus port."""
    name: str
    port: int
    prometheus_port: int
    proc: Proc

    def call(self, method: str, path: str, **kw) -> Response:
        return request(self.port, method, path, **kw)

    def metrics_text(self) -> str:
        return request(self.prometheus_port, "GET", "/metrics").text()


@dataclass
class Rig:
    """The whole set: ``rust`` and ``ours`` in front of ``mock_url`` and ``echo_url``."""
    workdir: str
    procs: list = field(default_factory=list)
    rust: Gateway | None = None
    ours: Gateway | None = None
    mock_url: str = ""
    echo_url: str = ""
    extra_url: str = ""
    echo_port: int = 0

    # -- the echo worker's record of what reached it

    def echo_mark(self) -> int:
        return request(self.echo_port, "GET", "/_received?after=999999999999").json()["last"]

    def echo_since(self, mark: int) -> list:
        return request(self.echo_port, "GET", f"/_received?after={mark}").json()["records"]

    # -- life cycle

    def _spawn(self, name: str, argv: list) -> Proc:
        proc = Proc(name, argv, os.path.join(self.workdir, f"{name}.log"))
        self.procs.append(proc)
        proc.start()
        return proc

    def _wait_listening(self, proc: Proc, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited at start-up:\n{proc.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{proc.name} did not listen on {port} within {START_TIMEOUT}s:\n{proc.tail()}")

    def _wait_ready(self, gw: Gateway, models: set, workers: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if not gw.proc.alive():
                raise RuntimeError(f"{gw.name} exited at start-up:\n{gw.proc.tail()}")
            try:
                # /readiness and /v1/models answer 503 while workers are pending, and such an
                # answer lands in the response counters the metric-family cases compare (one
                # gateway may be probed before its workers are healthy, the other after): so
                # they are asked only once GET /workers, a 200 either way, lists every worker
                # healthy
                w = gw.call("GET", "/workers", timeout=2)
                listed = w.json().get("workers", []) if w.status == 200 else []
                last = f"workers {w.status} {w.body[:200]!r}"
                if len(listed) != workers or not all(x.get("is_healthy") for x in listed):
                    time.sleep(0.2)
                    continue
                r = gw.call("GET", "/readiness", timeout=2)
                last = f"readiness {r.status} {r.body[:200]!r}"
                if r.status == 200 and r.json().get("healthy_workers") == workers:
                    m = gw.call("GET", "/v1/models", timeout=2)
                    last += f"; models {m.status} {m.body[:300]!r}"
                    if m.status == 200 and models <= {d.get("id") for d in m.json().get("data", [])}:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{gw.name} not ready within {START_TIMEOUT}s ({last}):\n{gw.proc.tail()}")

    def start(self, rust_bin: str) -> None:
        py = sys.executable
        mock_port, echo_port, extra_port, *gw_ports = free_ports(7)
        # python -m smg.testing.mock_worker is `smg-proxy mock-worker` without the gateway's imports
        mock = self._spawn("mock-worker", [py, "-m", "smg.testing.mock_worker", "--port", str(mock_port),
                                           "--model", MOCK_MODEL, "--worker-id", "conf-mock"])
        echo = self._spawn("echo-worker", [py, "-m", "smg.testing.echo_worker", "--port", str(echo_port),
                                           "--model", ECHO_MODEL, "--worker-id", "conf-echo"])
        extra = self._spawn("extra-worker", [py, "-m", "smg.testing.mock_worker", "--port", str(extra_port),
                                             "--model", EXTRA_MODEL, "--worker-id", "conf-extra"])
        ours_argv = ours_command()  # while the workers start
        for proc, port in ((mock, mock_port), (echo, echo_port), (extra, extra_port)):
            self._wait_listening(proc, port)
        self.mock_url = f"http://127.0.0.1:{mock_port}"
        self.echo_url = f"http://127.0.0.1:{echo_port}"
        self.extra_url = f"http://127.0.0.1:{extra_port}"
        self.echo_port = echo_port

        gateways = []
        for i, (name, base) in enumerate((("rust", [rust_bin, "launch"]), ("ours", ours_argv))):
            port, prom = gw_ports[2 * i], gw_ports[2 * i + 1]
            argv = base + ["--host", "127.0.0.1", "--port", str(port),
                           "--worker-urls", self.mock_url, self.echo_url,
                           "--policy", "round_robin",
                           "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom),
                           "--log-level", "warn"]
            gw = Gateway(name, port, prom, self._spawn(f"gateway-{name}", argv))
            gateways.append(gw)
        self.rust, self.ours = gateways
        for gw in gateways:
            self._wait_listening(gw.proc, gw.port)
        for gw in gateways:
            self._wait_ready(gw, {MOCK_MODEL, ECHO_MODEL}, 2)

    def stop(self) -> None:
        """SIGTERM to every process at once, SIGKILL to those still running STOP_GRACE later."""
        for proc in self.procs:
            try:
                proc.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            proc.reap(deadline)
