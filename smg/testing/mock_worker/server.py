"""``MockWorker``: one mock inference worker on a TCP port; start, stop, config, stats.

Rules:
- ``start`` returns once the socket accepts; ``stop`` closes the listener and aborts
  every connection, hung and streaming ones included, so a test never leaks one.
- The worker owns what its connections share: the config, the stats, the count of
  answers in progress (``_inflight``), the id counter and the template cache.
- Templates (``templates.py``) are cached per key, at most ``TEMPLATE_CACHE_MAX`` of
  them, and dropped whenever the config's ``_version`` moves (``_reset_templates``).
  ``_plain`` caches "no failure injection and no delay", the fast path's condition.
- Ids are 16 ASCII bytes: 6 hex chars random per worker + a 10-digit counter: unique
  within a worker, and (barring a 1-in-16M prefix clash) across workers.
- ``start(ssl=...)`` serves HTTPS (``url`` then says ``https``); ``tls_context`` builds
  the context from PEM files, optionally requiring a client certificate (a worker
  behind mutual TLS).
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import fields
from typing import Any

from smg.server.tls import server_context
from smg.testing.mock_worker.config import MockConfig
from smg.testing.mock_worker.endpoints import ROUTES
from smg.testing.mock_worker.protocol import MockProtocol
from smg.testing.mock_worker.stats import MockStats
from smg.testing.mock_worker.templates import BUILDERS

TEMPLATE_CACHE_MAX = 256


class MockWorker:
    """One mock inference worker listening on a TCP port.

    Usage::

        w = MockWorker(MockConfig(num_chunks=4))
        await w.start()            # 127.0.0.1, a free port
        ... w.url, w.port, w.stats, w.config.fail_status = 503 ...
        await w.stop()
    """

    def __init__(self, config: MockConfig | None = None, **overrides: Any) -> None:
        self._config = config if config is not None else MockConfig()
        if overrides:
            self._config.update(overrides)
        self.stats = MockStats()
        self.host = "127.0.0.1"
        self.port = 0
        self.created = int(time.time())
        self._server: Any = None
        self.tls = False
        self._conns: set = set()
        self._inflight = 0
        self._templates: dict = {}
        self._tmpl_version = -1
        self._plain = True
        self._wid = b""
        self._id_prefix = os.urandom(3).hex().encode()
        self._counter = 0
        self.routes = ROUTES   # path -> {method: handler}; a subclass may serve a variant

    @property
    def config(self) -> MockConfig:
        return self._config

    @config.setter
    def config(self, value: MockConfig) -> None:
        self._config = value
        self._reset_templates()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl=None) -> MockWorker:
        """Listens on ``host:port`` (0 = a free port); returns once accepting. ``ssl``
        (an ``ssl.SSLContext``, e.g. from ``tls_context``) makes it serve HTTPS."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: MockProtocol(self), host, port, backlog=1024, ssl=ssl)
        self.tls = ssl is not None
        sockname = self._server.sockets[0].getsockname()
        self.host = host
        self.port = sockname[1]
        if not self._config.worker_id:
            self._config.worker_id = f"mock-{self.port}"
        self._reset_templates()
        return self

    async def stop(self) -> None:
        """Stops listening and drops every connection (hung and streaming ones included)."""
        if self._server is not None:
            self._server.close()
        for proto in list(self._conns):
            if proto.transport is not None:
                proto.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    def reset_stats(self) -> None:
        """Zeroes the counters in place (``open_connections`` keeps counting live ones)."""
        fresh = MockStats()
        for f in fields(MockStats):
            if f.name != "open_connections":
                setattr(self.stats, f.name, getattr(fresh, f.name))

    async def __aenter__(self) -> MockWorker:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- internals shared with the connections

    def _next_id(self) -> bytes:
        self._counter += 1
        return b"%s%010d" % (self._id_prefix, self._counter % 10_000_000_000)

    def _reset_templates(self) -> None:
        cfg = self._config
        self._templates = {}
        self._tmpl_version = cfg._version
        # Nothing to inject or wait for: the generation endpoints answer inline.
        self._plain = (cfg.fail_status is None and cfg.fail_mode is None and not cfg.ttft
                       and not cfg.token_delay)
        self._wid = cfg.worker_id.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")

    def _template(self, key: tuple) -> tuple:
        kind, model, p, stream, usage = key
        p = max(p, 1)
        tmpl = BUILDERS[kind](self._config, self._wid, model, p, stream, usage)
        if len(self._templates) >= TEMPLATE_CACHE_MAX:
            self._templates.clear()
        self._templates[key] = tmpl
        return tmpl


def tls_context(cert_path: str, key_path: str, client_ca_path: str = ""):
    """A server context for ``MockWorker.start(ssl=...)``: the PEM chain and key, and
    with ``client_ca_path`` a client certificate issued by that CA required. HTTP/1.1
    only (ALPN), as the engines smg fronts.

    Raises:
        OSError, ssl.SSLError: material that does not load.
    """
    return server_context(cert_path, key_path, client_ca_path, alpn=["http/1.1"])


async def start_mock_workers(n: int, host: str = "127.0.0.1", **config: Any) -> list:
    """Starts ``n`` workers on free ports, each with its own ``MockConfig(**config)``."""
    workers = []
    try:
        for _ in range(n):
            workers.append(await MockWorker(MockConfig(**config)).start(host))
    except BaseException:
        for w in workers:
            await w.stop()
        raise
    return workers
