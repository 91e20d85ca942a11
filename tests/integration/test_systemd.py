"""smg-proxy started as systemd starts a Type=notify service: NOTIFY_SOCKET set to a test
datagram socket, WATCHDOG_USEC set, LISTEN_FDS/LISTEN_PID with a pre-bound socket on fd 3.
It must say READY=1 (with a STATUS= line), ping the watchdog, serve on the socket it was
given, reload its --config on SIGHUP between RELOADING=1 and READY=1 (workers added and
removed while a stream stays open, the cache_aware tree kept, an invalid file and a
run-time-fixed setting refused with the old configuration kept), and on SIGTERM send
STOPPING=1 and let an in-flight stream finish."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.helpers import wait_for

from tests.integration.test_cli import free_port, smg_proxy, stop

CHAT = "http://127.0.0.1:{port}/v1/chat/completions"


class NotifySocket:
    """The datagram socket systemd would listen on, read by a thread as systemd reads it
    (at once, so the gateway's sends never find its queue full); ``wait(key)`` returns
    the next message not yet waited past that holds the line ``key`` (bounded)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen: list = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            msg = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._cond:
                self.seen.append(msg)
                self._cond.notify_all()

    def wait(self, key: str, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._cursor < len(self.seen):
                    msg = self.seen[self._cursor]
                    self._cursor += 1
                    if key in msg:
                        return msg
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {key} from the gateway; saw {self.seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(str(tmp_path / "notify"))
    yield n
    n.close()


@pytest.fixture
def workers():
    started = []

    def start(worker_id, *args):
        port = free_port()
        p = smg_proxy("mock-worker", "--port", str(port), "--worker-id", worker_id, *args)
        started.append(p)
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                httpx.get(url + "/health", timeout=1)
                return url
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("mock worker never answered")

    yield start
    for p in started:
        stop(p)


# what systemd does between fork and exec: the socket moved to fd 3, LISTEN_PID = own pid
EXEC_AS_SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "smg", *sys.argv[2:]])
"""


def start_as_systemd(notify: NotifySocket, *args) -> tuple:
    """The gateway with NOTIFY_SOCKET, WATCHDOG_USEC and a pre-bound listening socket on
    fd 3 (LISTEN_PID is the gateway's own pid: the launcher sets it, then execs):
    ``(process, the socket's port, the --port given, which must stay unbound)``."""
    pre = socket.socket()
    pre.bind(("127.0.0.1", 0))
    pre.listen(128)
    port = pre.getsockname()[1]
    fd = pre.fileno()
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000", LISTEN_FDS="1",
               LISTEN_FDNAMES="api")
    unused = free_port()  # --port: never bound, the passed socket is the listener
    cmd = [sys.executable, "-c", EXEC_AS_SYSTEMD, str(fd), "--host", "127.0.0.1",
           "--port", str(unused), "--prometheus-port", "0", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, pass_fds=(fd,))
    pre.close()  # the gateway holds it now; a connection made before it accepts waits in the backlog
    return p, port, unused


def chat(port, text, **kw):
    r = httpx.post(CHAT.format(port=port), json={"model": "mock-model", "messages": [
        {"role": "user", "content": text}], **kw}, timeout=15)
    assert r.status_code == 200, r.text
    return r.headers["x-mock-worker"]


class Stream(threading.Thread):
    """One streamed chat read to its end on a thread: ``events`` (data lines) and ``done``."""

    def __init__(self, port, text) -> None:
        super().__init__(daemon=True)
        self.port, self.text = port, text
        self.events: list = []
        self.worker = None
        self.error = None
        self.started = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("POST", CHAT.format(port=self.port), timeout=30, json={
                    "model": "mock-model", "stream": True, "messages": [{"role": "user", "content": self.text}]}) as r:
                self.worker = r.headers.get("x-mock-worker")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.started.set()

    def content(self) -> str:
        return "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                       for e in self.events if e != "[DONE]")


def test_ready_watchdog_socket_activation_and_stop_with_a_stream_in_flight(notify, workers):
    slow = workers("slow", "--token-delay", "0.2", "--num-chunks", "10")
    g, port, unused = start_as_systemd(notify, "--worker-urls", slow, "--systemd-wait-for-worker",
                               "--shutdown-grace-period-secs", "20")
    try:
        ready = notify.wait("READY")
        assert f"listening on http://127.0.0.1:{port}" in ready["STATUS"]
        assert "1 worker ready" in ready["STATUS"]  # --systemd-wait-for-worker: READY=1 after it
        with pytest.raises(httpx.ConnectError):  # --port was not bound: the socket passed is the listener
            httpx.get(f"http://127.0.0.1:{unused}/health", timeout=2)
        notify.wait("WATCHDOG")
        notify.wait("WATCHDOG")
        s = Stream(port, "hello")
        s.start()
        assert s.started.wait(15) and s.error is None and s.events  # the stream is under way
        g.send_signal(signal.SIGTERM)
        stopping = notify.wait("STOPPING")
        assert stopping["STATUS"] == "draining 1 in-flight request"
        s.join(20)
        assert s.error is None and s.events[-1] == "[DONE]"
        assert len([e for e in s.events if e != "[DONE]"]) >= 10  # every token arrived
        assert g.wait(20) == 0
    finally:
        code, _, err = stop(g)
        print(err)
    assert "Traceback" not in err


def write(path, **values):
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))


def test_sighup_reload_keeps_tree_and_streams_and_refuses_bad_files(notify, workers, tmp_path):
    w1, w2 = workers("w1"), workers("w2")
    w3 = workers("w3", "--token-delay", "0.2", "--num-chunks", "10")
    conf = tmp_path / "smg.yaml"
    write(conf, worker_urls=[w1, w2], policy="cache_aware")
    g, port, _ = start_as_systemd(notify, "--config", str(conf), "--systemd-wait-for-worker")
    try:
        notify.wait("READY")
        httpx.get(f"http://127.0.0.1:{port}/readiness", timeout=5).raise_for_status()
        prompts = ["alpha " * 20, "bravo " * 20, "charlie " * 20, "delta " * 20]
        placed = {p: chat(port, p) for p in prompts}
        assert set(placed.values()) == {"w1", "w2"}

        # add w3: the prompts already placed stay where their prefixes are (tree kept);
        # a new one goes to the idle newcomer
        write(conf, worker_urls=[w1, w2, w3], policy="cache_aware", cache_threshold=0.4)
        g.send_signal(signal.SIGHUP)
        assert "MONOTONIC_USEC" in notify.wait("RELOADING")
        notify.wait("READY")
        # w3 is probed ready shortly after the reload
        assert wait_for(lambda: chat(port, "echo " * 20) == "w3", 15, interval=0)
        assert {p: chat(port, p) for p in prompts} == placed

        # remove w3 while a stream on it is open: the stream ends whole, new requests avoid w3
        s = Stream(port, "echo " * 20)
        s.start()
        assert s.started.wait(15) and s.worker == "w3"
        write(conf, worker_urls=[w1, w2], policy="cache_aware", cache_threshold=0.4)
        g.send_signal(signal.SIGHUP)
        notify.wait("RELOADING")
        notify.wait("READY")
        assert chat(port, "echo " * 20) in {"w1", "w2"}
        s.join(20)
        assert s.error is None and s.events[-1] == "[DONE]" and len(s.events) >= 11

        # an invalid file is refused, the old configuration stays
        conf.write_text("worker_urls: [unclosed\n")
        g.send_signal(signal.SIGHUP)
        notify.wait("RELOADING")
        notify.wait("READY")
        # a setting fixed at start-up is refused by name, and nothing else is applied
        write(conf, worker_urls=[w1], policy="round_robin", request_timeout_secs=30, cache_threshold=0.4)
        g.send_signal(signal.SIGHUP)
        notify.wait("RELOADING")
        notify.wait("READY")
        assert {p: chat(port, p) for p in prompts} == placed  # w2 still there: nothing applied
        models = httpx.get(f"http://127.0.0.1:{port}/workers", timeout=5).json()
        assert sorted(w["url"] for w in models["workers"]) == sorted([w1, w2])
    finally:
        code, _, err = stop(g)
        print(err)
    assert code == 0
    refused = [line for line in err.splitlines() if "configuration reload refused" in line]
    assert len(refused) == 2
    assert "is not valid YAML: expected ',' or ']', but got '<stream end>' (line 2, column 1)" in refused[0]
    assert "--policy, --request-timeout-secs cannot change at run time" in refused[1]
    assert "worker_urls, cache_threshold changed" in err
    assert "Traceback" not in err
