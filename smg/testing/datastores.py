"""Real PostgreSQL and Redis servers for tests and benchmarks, started on free loopback
ports in a temporary directory (Debian's ``postgresql`` and ``redis-server`` binaries).

``with PostgresServer() as pg: pg.url`` / ``with RedisServer() as r: r.url``;
``stop()`` and ``start()`` again (the same port, the same data for PostgreSQL) to show
storage going away and coming back. ``PostgresServer.binaries()`` /
``RedisServer.binary()`` are None when the server is not installed (tests skip).

Rules: every wait is bounded (``START_TIMEOUT``); a server that does not come up
raises with its log; the data directory is removed on exit. PostgreSQL refuses to run
as root, so as root it runs as the ``postgres`` user (created by the Debian package).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 30.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_port(port: int, proc, what: str, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    text = open(log, errors="replace").read()[-2000:] if os.path.exists(log) else ""
    raise RuntimeError(f"{what} did not start on port {port}: {text}")


class PostgresServer:
    def __init__(self) -> None:
        self.bin = self.binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL binaries (initdb, postgres) not found")
        self.dir = tempfile.mkdtemp(prefix="smg-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.port = free_port()
        self.proc = None
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "smg", "--auth=trust", "-E", "UTF8",
                   "--no-sync"])

    @staticmethod
    def binaries() -> str | None:
        cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + ["/usr/local/bin", "/usr/bin"]
        for d in cands:
            if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "postgres")):
                return d
        return None

    def _run(self, cmd: list) -> None:
        subprocess.run(cmd, check=True, capture_output=True, user=self.user, timeout=START_TIMEOUT)

    @property
    def url(self) -> str:
        return f"postgresql://smg@127.0.0.1:{self.port}/postgres"

    def start(self) -> "PostgresServer":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"], stdout=out, stderr=subprocess.STDOUT, user=self.user)
        _wait_port(self.port, self.proc, "postgres", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # fast shutdown: clients are cut at once
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self) -> None:
        self.bin = self.binary()
        if self.bin is None:
            raise RuntimeError("redis-server not found")
        self.dir = tempfile.mkdtemp(prefix="smg-redis-")
        self.log = os.path.join(self.dir, "log")
        self.port = free_port()
        self.proc = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir], stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "redis-server", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(START_TIMEOUT)
        self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
