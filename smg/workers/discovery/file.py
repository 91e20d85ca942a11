"""FileDiscovery: workers from a JSON manifest (``--discovery-file``).

The manifest (format: manifest.py) is re-read every
``--discovery-check-interval-secs`` (30) and applied when its content changed.

Rules:
1. ``check()`` is synchronous: stat, read when the stat changed (or forced), hash,
   parse, apply. ``run()`` only adds the waiting, and forces a read every interval,
   so an edit that keeps mtime and size is still seen.
2. Content decides: a read whose bytes hash as the last applied ones changes nothing.
3. A manifest that cannot be read or parsed (missing, half-written) keeps the
   current workers; the error is counted and logged once until it changes.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable

from smg.workers.background import Background
from smg.workers.discovery.manifest import parse_manifest
from smg.workers.discovery.routing import OnAdd, OnRemove, Routing

log = logging.getLogger("smg.workers.discovery")


class FileDiscovery(Background):
    """Workers from a JSON manifest, re-read on change and every ``interval`` seconds.

    ``check()`` returns True when the manifest was (re)applied. ``on_sync(seconds)``
    hears how long each read of the manifest took to read and apply.
    """

    source = "file"

    def __init__(self, path: str, on_add: OnAdd, on_remove: OnRemove, *, interval: float = 30.0,
                 sleep: Callable = asyncio.sleep, on_sync: Callable | None = None) -> None:
        if interval <= 0:
            raise ValueError("discovery check interval must be positive")
        self.path = path
        self.interval = interval
        self._sleep = sleep
        self._routing = Routing(on_add, on_remove)
        self._on_sync = on_sync
        self._stat: tuple | None = None
        self._digest: bytes | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def workers(self) -> dict:
        """{url: spec} of the workers the manifest currently lists."""
        return dict(self._routing.specs)

    def check(self, force: bool = False) -> bool:
        """Reads the manifest if it may have changed and applies the difference.

        The file is stat'ed every call and read when its mtime/size/inode changed (or
        ``force``). A missing or invalid file keeps the current workers.
        """
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._error(f"cannot stat {self.path}: {e.strerror or e}")
            return False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not force and sig == self._stat:
            return False
        t0 = time.monotonic()
        try:
            return self._read_and_apply(sig)
        finally:
            if self._on_sync is not None:
                self._on_sync(time.monotonic() - t0)

    def _read_and_apply(self, sig: tuple) -> bool:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            self._error(f"cannot read {self.path}: {e.strerror or e}")
            return False
        self._stat = sig
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        try:
            specs = parse_manifest(data)
        except ValueError as e:
            self._error(f"{self.path}: {e}")
            return False
        self._digest = digest
        self.last_error = None
        self._routing.set_owner("manifest", specs)
        return True

    def _error(self, msg: str) -> None:
        self.errors += 1
        if msg != self.last_error:
            log.warning("file discovery: %s (keeping %d workers)", msg, len(self._routing.specs))
        self.last_error = msg

    async def run(self, rounds: int | None = None) -> None:
        """Checks now, then every ``interval`` (until cancelled, or ``rounds`` checks)."""
        n = 0
        while rounds is None or n < rounds:
            self.check(force=True)
            n += 1
            if rounds is not None and n >= rounds:
                break
            await self._sleep(self.interval)
