"""The gateway as a systemd service: what it tells systemd at start, reload and stop.

``Service(notifier, status, ready_workers)`` drives a ``Notifier``
(smg/server/systemd.py): ``started()`` sends ``READY=1`` (after the first ready worker
when asked to wait for one) and starts the watchdog; ``reload(apply)`` wraps a
configuration reload in ``RELOADING=1`` … ``READY=1``; ``stopping()`` sends
``STOPPING=1`` before the drain; ``close()`` stops the pings.

Rules:
- Outside systemd (no ``NOTIFY_SOCKET``) nothing here schedules anything.
- ``WATCHDOG=1`` is sent from a timer on the event loop, every half ``WATCHDOG_USEC``,
  from ``started()`` (or while waiting for a worker) until ``close()``, through the
  drain too: a drain longer than ``WatchdogSec=`` must not get the service killed.
- ``STATUS=`` says what the gateway is doing (listening, how many workers ready,
  reloading, draining); the worker count is re-sent when it changes, checked at the
  watchdog's pace (or once a second without a watchdog), never per request.
- A reload that raises is the caller's to report; ``READY=1`` follows it all the same,
  since the old configuration is still serving. A reload before the first ``READY=1``
  (still waiting for a worker) sends neither: readiness is never announced early.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

STATUS_EVERY = 1.0  # seconds between worker-count checks when there is no watchdog


class Service:
    def __init__(self, notifier, status: Callable[[], str], ready_workers: Callable[[], int]) -> None:
        self.notifier = notifier
        self._status = status
        self._ready_workers = ready_workers
        self._handle = None
        self._last = None
        self._stopping = False

    def _line(self) -> str:
        n = self._ready_workers()
        return f"{self._status()}; {n} worker{'' if n == 1 else 's'} ready"

    async def started(self, wait_for_worker: bool) -> None:
        """``READY=1`` now, or once a worker is ready when ``wait_for_worker``."""
        if not self.notifier.enabled:
            return
        self._schedule()
        if wait_for_worker and not self._ready_workers():
            self.notifier.status(f"{self._status()}; waiting for a ready worker")
            while not self._ready_workers():
                await asyncio.sleep(0.1)
        self._last = self._line()
        self.notifier.ready(self._last)

    def _schedule(self) -> None:
        every = self.notifier.watchdog_interval or STATUS_EVERY
        self._handle = asyncio.get_running_loop().call_later(every, self._beat)

    def _beat(self) -> None:
        self._schedule()
        if self.notifier.watchdog_interval:
            self.notifier.watchdog()
        if self._last is not None and not self._stopping:
            line = self._line()
            if line != self._last:
                self._last = line
                self.notifier.status(line)

    def reload(self, apply: Callable[[], object]):
        """Runs ``apply()`` between ``RELOADING=1`` and ``READY=1``; returns its result."""
        if self._last is None:  # READY=1 not sent yet (waiting for a worker): only the reload
            return apply()
        self.notifier.reloading()
        try:
            return apply()
        finally:
            self._last = self._line()
            self.notifier.ready(self._last)

    def stopping(self, inflight: int) -> None:
        self._stopping = True
        self.notifier.stopping(f"draining {inflight} in-flight request{'' if inflight == 1 else 's'}")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.notifier.close()
