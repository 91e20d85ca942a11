"""smg/server/systemd.py: the sd_notify datagrams, the watchdog interval, which sockets
socket activation hands to which listener, and the refusals of what cannot be used."""
from __future__ import annotations

import contextlib
import os
import socket

import pytest

from smg.errors import ConfigError
from smg.server.systemd import Notifier, listen_sockets


@pytest.fixture
def receiver(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "n"))
    s.settimeout(5)
    yield s
    s.close()


def test_outside_systemd_nothing_is_sent():
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval == 0 and n.ready("x") is False


def test_lines_and_watchdog_interval(receiver):
    path = receiver.getsockname()
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_interval == 2.0  # half of WATCHDOG_USEC
    assert n.ready("listening")
    assert receiver.recv(100) == b"READY=1\nSTATUS=listening"
    n.reloading()
    lines = receiver.recv(200).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and int(lines[1][15:]) > 0
    n.stopping("draining 2 in-flight requests")
    assert receiver.recv(100) == b"STOPPING=1\nSTATUS=draining 2 in-flight requests"
    n.watchdog()
    assert receiver.recv(100) == b"WATCHDOG=1"
    n.close()


def test_watchdog_for_another_pid_or_garbage_is_off(receiver):
    path = receiver.getsockname()
    assert Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}) \
        .watchdog_interval == 0
    assert Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"}).watchdog_interval == 0


def test_abstract_socket_and_a_gone_reader_never_raise():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0smg-test-notify-%d" % os.getpid())
    n = Notifier(f"@smg-test-notify-{os.getpid()}")
    assert n.status("up") and s.recv(10) == b"STATUS=up"
    s.close()
    assert n.status("again") is False  # logged once, not raised
    n.close()


def _listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@contextlib.contextmanager
def on_fds(*socks):
    """``socks`` placed on fds 3, 4, ... of this process (as systemd passes them), and
    whatever was there put back afterwards."""
    saved = []
    for i, s in enumerate(socks):
        fd = 3 + i
        try:
            saved.append((fd, os.dup(fd)))
        except OSError:
            saved.append((fd, None))
        os.dup2(s.fileno(), fd)
    try:
        yield
    finally:
        for fd, old in saved:
            if old is None:
                with contextlib.suppress(OSError):  # listen_sockets may have closed it already
                    os.close(fd)
            else:
                os.dup2(old, fd)
                os.close(old)
        for s in socks:
            s.close()


def test_listen_sockets_only_for_this_pid_and_variables_removed():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert listen_sockets(env) == {} and env == {}


def test_listen_sockets_by_name():
    a, b = _listener(), _listener()
    where = a.getsockname(), b.getsockname()
    with on_fds(a, b):
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "metrics:whatever"}
        got = listen_sockets(env)
        assert set(got) == {"metrics", "api"} and env == {}
        assert (got["metrics"].getsockname(), got["api"].getsockname()) == where
        for s in got.values():
            s.detach()
        with pytest.raises(ConfigError, match="two sockets passed for the api listener"):
            listen_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"})


def test_a_socket_that_is_not_listening_is_refused():
    with on_fds(socket.socket()):
        with pytest.raises(ConfigError, match="fd 3 is not a listening stream socket"):
            listen_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
