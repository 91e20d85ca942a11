"""Start-up checks of the CLI (real processes, real sockets on 127.0.0.1): bind errors
name the listener and address that failed, a worker URL that is the gateway itself is
refused, the metrics listener follows --host's family."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from smg.config.load import build_config

CLI = [sys.executable, "-c", "from smg.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture
def taken():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_metrics_port_conflict_names_the_metrics_address(taken):
    port = _free_port()
    p = _run("--host", "127.0.0.1", "--port", str(port), "--worker-urls", "http://127.0.0.1:9",
             "--prometheus-port", str(taken))
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken} (metrics listener)" in p.stderr
    assert str(port) not in p.stderr.split("cannot listen")[1]


def test_main_port_conflict_names_the_main_address(taken):
    p = _run("--host", "127.0.0.1", "--port", str(taken), "--worker-urls", "http://127.0.0.1:9",
             "--prometheus-port", str(_free_port()))
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken} (main listener)" in p.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_worker_url_that_is_the_gateway_is_refused(host):
    port = _free_port()
    p = _run("--host", "127.0.0.1", "--port", str(port), "--worker-urls", f"http://{host}:{port}",
             "--prometheus-port", str(_free_port()))
    assert p.returncode == 2
    assert "--worker-urls" in p.stderr and "own listener" in p.stderr and f"127.0.0.1:{port}" in p.stderr


@pytest.mark.parametrize("host,metrics", [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("0.0.0.0", "0.0.0.0"),
                                          ("::", "::"), ("10.0.0.5", "0.0.0.0")])
def test_metrics_listener_follows_host(host, metrics):
    assert build_config({"host": host}).prometheus_host == metrics
    assert build_config({"host": host, "prometheus_host": "0.0.0.0"}).prometheus_host == "0.0.0.0"
