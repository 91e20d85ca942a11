"""systemd integration: readiness notifications, the watchdog, socket activation.

``Notifier.from_env()`` speaks the sd_notify datagram protocol (sd_notify(3)) to the
socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace);
without that variable it is a no-op. ``listen_sockets()`` takes the sockets systemd
passed (sd_listen_fds(3)).

Rules:
- The protocol is small and implemented here: one datagram per state change, lines of
  ``KEY=value`` (``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``,
  ``WATCHDOG=1``, ``MONOTONIC_USEC=`` with ``RELOADING=1`` as systemd 253 asks). A
  failed send is logged once and never raised: readiness reporting must not stop the
  gateway. The socket is non-blocking: a reader whose queue is full loses that
  message (a ping, a status line) rather than stalling the event loop.
- The watchdog interval is half of ``WATCHDOG_USEC`` (as sd_watchdog_enabled(3)
  advises) and only when ``WATCHDOG_PID`` is unset or names this process. The pings
  come from the event loop's own timer, so a loop that stops turning stops them and
  systemd restarts the service.
- Socket activation: the sockets are used only when ``LISTEN_PID`` is this process;
  fds start at 3 (``SD_LISTEN_FDS_START``). ``LISTEN_FDNAMES`` (``FileDescriptorName=``)
  may name a socket ``metrics`` or ``control`` for those listeners; every other socket
  is the API listener, and there may be one of those. The variables are removed from
  the environment once read, so child processes (mock workers, later data-plane
  processes) do not take them for their own.
"""
from __future__ import annotations

import logging
import os
import socket
import time

from smg.errors import ConfigError

log = logging.getLogger("smg.systemd")

SD_LISTEN_FDS_START = 3
_ACTIVATION_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
LISTENER_NAMES = ("api", "metrics", "control")


class Notifier:
    """Sends sd_notify lines; ``enabled`` is False (and every call a no-op) outside systemd."""

    __slots__ = ("_address", "_sock", "_failed", "watchdog_interval")

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._failed = False
        #: seconds between WATCHDOG=1 pings; 0: no watchdog
        self.watchdog_interval = watchdog_usec / 2e6 if address and watchdog_usec > 0 else 0.0

    @classmethod
    def from_env(cls, environ=None) -> "Notifier":
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = 0
        pid = env.get("WATCHDOG_PID")
        if pid in (None, "", str(os.getpid())):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0") or 0)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds; no watchdog pings",
                            env.get("WATCHDOG_USEC"))
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Sends ``lines`` as one datagram; False when disabled or the send failed."""
        if self._address is None:
            return False
        addr = self._address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a reader that does not keep up never stalls the loop
            self._sock.sendto("\n".join(lines).encode(), addr)
        except BlockingIOError:  # the reader's queue is full: this message is dropped
            return False
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.error("cannot notify systemd at %s: %s", self._address, e.strerror or e)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def listen_sockets(environ=None) -> dict:
    """The sockets systemd passed this process, by listener (``api``/``metrics``/
    ``control``), and removes the activation variables from the environment.

    Raises:
        ConfigError: two sockets for the API listener, or a passed fd that is not a
        listening stream socket.
    """
    env = os.environ if environ is None else environ
    pid, count, names = (env.get(k) for k in _ACTIVATION_VARS)
    for k in _ACTIVATION_VARS:
        env.pop(k, None)
    if pid != str(os.getpid()) or not count:
        return {}
    try:
        n = int(count)
    except ValueError:
        raise ConfigError("LISTEN_FDS", f"{count!r} is not a number of sockets") from None
    labels = (names or "").split(":")
    out: dict = {}
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        label = labels[i] if i < len(labels) and labels[i] in LISTENER_NAMES else "api"
        if label in out:
            raise ConfigError("LISTEN_FDS", f"two sockets passed for the {label} listener (fd {fd}); "
                              "name them with FileDescriptorName=api|metrics|control")
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise ConfigError("LISTEN_FDS", f"fd {fd} is not a socket: {e.strerror or e}") from None
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ConfigError("LISTEN_FDS", f"fd {fd} is not a listening stream socket")
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        out[label] = sock
    return out
