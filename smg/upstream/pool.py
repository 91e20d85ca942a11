"""Per-worker pool of keep-alive HTTP/1.1 connections.

Rules:
- An idle connection older than ``idle_timeout`` is never reused: engines close idle
  keep-alive connections after 5 s, and reusing one the worker is closing loses the
  request (sglang#20851); the default 3 s stays below that.
- A connection goes back to the pool only after a complete response on a keep-alive
  connection; anything else closes it.
- Connecting is the only asynchronous step; callers get a callback, not a coroutine.
- Every limit comes from the gateway's settings (``from_config``); nothing is defaulted here.
- An https worker's pool is given the gateway's one client context (smg/upstream/tls.py)
  and the host name its certificate is checked against; ``connect_timeout`` bounds
  connect and TLS handshake together, and a failed handshake is ``ConnectFailed``.
"""
from __future__ import annotations

import asyncio

from smg.errors import ConnectFailed, ConnectTimeout, UpstreamError
from smg.upstream.connection import UpstreamConnection


class UpstreamPool:
    def __init__(self, loop, host: str, port: int, *, idle_timeout: float, max_idle: int,
                 connect_timeout: float, max_head_size: int, ssl=None, server_hostname: str | None = None) -> None:
        self.loop = loop
        self.ssl = ssl                    # ssl.SSLContext for an https worker, else None
        self.server_hostname = server_hostname if ssl is not None else None
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.max_head_size = max_head_size
        self._idle: list = []
        self.open = 0  # connections currently open (idle or busy)
        self._closed = False

    @classmethod
    def from_config(cls, loop, host: str, port: int, cfg, ssl=None) -> "UpstreamPool":
        """``ssl``: the client context for an https worker (its certificate is checked for ``host``)."""
        return cls(loop, host, port, idle_timeout=cfg.upstream_pool_idle_timeout_secs,
                   max_idle=cfg.upstream_pool_max_idle, connect_timeout=cfg.connect_timeout_secs,
                   max_head_size=cfg.max_upstream_header_size, ssl=ssl, server_hostname=host)

    def take(self) -> UpstreamConnection | None:
        """An idle connection fresh enough to reuse, or None."""
        idle = self._idle
        if not idle:
            return None
        limit = self.loop.time() - self.idle_timeout
        while idle:
            c = idle.pop()
            if c.closed:
                continue
            if c.idle_since < limit:
                c.abort()
                continue
            c.reused = True
            return c
        return None

    def put(self, conn: UpstreamConnection) -> None:
        conn.owner = None
        if conn.closed:
            return
        if self._closed or len(self._idle) >= self.max_idle:
            conn.transport.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Called by a connection when it is lost."""
        self.open -= 1
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def connect(self, callback) -> asyncio.Future:
        """Opens a new connection; ``callback(conn, error)`` runs on completion.

        Returns the task (cancel it to give up; the callback then is not called).
        """
        task = self.loop.create_task(self._connect())

        def done(t: asyncio.Task) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                callback(None, exc if isinstance(exc, UpstreamError) else ConnectFailed(
                    f"cannot connect to worker {self.host}:{self.port}: {exc}"))
            else:
                callback(t.result(), None)

        task.add_done_callback(done)
        return task

    async def _connect(self) -> UpstreamConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.server_hostname)
        except TimeoutError:
            raise ConnectTimeout(f"timed out connecting to worker {self.host}:{self.port}") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to worker {self.host}:{self.port}: {e.strerror or e}") from None
        self.open += 1
        return conn

    def sweep(self, now: float) -> None:
        """Closes idle connections past the idle timeout (called periodically)."""
        idle = self._idle
        if not idle:
            return
        limit = now - self.idle_timeout
        keep = []
        for c in idle:
            if c.idle_since < limit or c.closed:
                if not c.closed:
                    c.transport.close()
            else:
                keep.append(c)
        self._idle = keep

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            c.transport.close()

    @property
    def idle_count(self) -> int:
        return len(self._idle)
