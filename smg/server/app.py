"""The Gateway: owns the listener, the worker registry, policies, the route table and
the periodic sweep (coarse clock, request deadlines, connection timeouts, idle pools).

Routing state lives in the registries (smg/workers/registry.py,
smg/routing/policies.py), changed only through their event methods.
"""
from __future__ import annotations

import asyncio
import logging

from smg.config.schema import GatewayConfig
from smg.errors import UpstreamError
from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, Metrics, exposition
from smg.observability.observer import Observer
from smg.routing.policies import PolicyRegistry
from smg.server.protocol import HTTPServerProtocol
from smg.server.routes import Handlers
from smg.server.timers import TimerWheel
from smg.upstream import client
from smg.upstream.pool import UpstreamPool
from smg.workers.registry import WorkerRegistry
from smg.workers.worker import READY, Worker

log = logging.getLogger("smg.gateway")

TICK = 0.1           # clock and request-deadline resolution, seconds
SWEEP_EVERY = 0.5    # connection timeouts and idle-pool sweep, seconds


class _MetricsSite:
    """The Prometheus listener: the same HTTP protocol with one route, nothing recorded."""

    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self.config = gw.config
        self.request_id_headers = gw.request_id_headers
        self.connections: set = set()
        self.observer = None
        self.tracing = None
        self.draining = False
        self._registry = gw.metrics.registry()
        self.routes = {b"/metrics": {b"GET": self._metrics}}

    @property
    def now(self) -> float:
        return self.gw.now

    def clock(self) -> float:
        return self.gw.clock()

    def _metrics(self, proto, req, body: bytes) -> None:
        proto.respond(200, exposition(self._registry), content_type=b"text/plain; version=0.0.4; charset=utf-8")


class Gateway:
    def __init__(self, config: GatewayConfig, access_log=None, tracing=None) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock = None  # loop.time once started
        self.now = 0.0
        self.connections: set = set()
        self.timers = TimerWheel(TICK)
        self.registry = WorkerRegistry()
        self.policies = PolicyRegistry(self.registry, config.policy, config)
        self.routes = Handlers(self).table()
        self.request_id_headers = tuple(h.encode() for h in config.request_id_headers)
        self.draining = False
        self.metrics = None if config.disable_metrics else Metrics(
            self, tuple(config.prometheus_duration_buckets) or DEFAULT_DURATION_BUCKETS)
        self.access_log = access_log
        self.tracing = tracing
        self.observer = Observer(self, self.metrics, access_log, tracing) \
            if (self.metrics or access_log or tracing) else None
        self.server: asyncio.base_events.Server | None = None
        self.metrics_server: asyncio.base_events.Server | None = None
        self._tick_handle = None
        self._next_sweep = 0.0
        self._tasks: set = set()

    # -- workers ----------------------------------------------------------------------

    def add_worker(self, url: str, models: tuple = ()) -> Worker:
        """Registers a worker (PENDING) and starts discovering its models."""
        cfg = self.config
        w = Worker(url, models)
        w.pool = UpstreamPool(self.loop, w.host, w.port, idle_timeout=cfg.upstream_pool_idle_timeout_secs,
                              max_idle=cfg.upstream_pool_max_idle, connect_timeout=cfg.connect_timeout_secs)
        self.registry.add(w)
        self._spawn(self._discover(w))
        return w

    def _spawn(self, coro) -> None:
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _discover(self, w: Worker) -> None:
        """Asks the worker for its models (GET /v1/models) until it answers; then READY.

        A worker without /v1/models that answers /health becomes READY serving any model.
        """
        delay = 0.1
        while self.registry.get(w.id) is w:
            try:
                data = await client.get_json(w.url, "/v1/models", timeout=5.0)
                cards = [m for m in (data.get("data") or []) if isinstance(m, dict) and isinstance(m.get("id"), str)] \
                    if isinstance(data, dict) else []
                self.registry.set_models(w, tuple(c["id"] for c in cards), cards)
                self.registry.set_status(w, READY)
                log.info("worker %s ready, models %s", w.url, list(w.models) or "any")
                return
            except UpstreamError as e:
                try:
                    status, _, _ = await client.request(w.url, "GET", "/health", timeout=5.0)
                except UpstreamError:
                    status = 0
                if 200 <= status < 300:
                    self.registry.set_status(w, READY)
                    log.info("worker %s ready (no model list: %s)", w.url, e)
                    return
                log.warning("worker %s not answering yet: %s", w.url, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        if self.observer is not None:
            self.observer.clock = self.clock
        self.now = self.loop.time()
        for url in self.config.worker_urls:
            self.add_worker(url)
        self.server = await self.loop.create_server(
            lambda: HTTPServerProtocol(self), self.config.host, self.config.port, backlog=4096)
        if self.metrics is not None:
            site = _MetricsSite(self)
            try:
                self.metrics_server = await self.loop.create_server(
                    lambda: HTTPServerProtocol(site), self.config.prometheus_host, self.config.prometheus_port)
            except OSError:
                self.server.close()
                raise
        self._tick()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.sockets[0].getsockname()[1]

    async def wait_ready(self, timeout: float) -> bool:
        """Waits until every registered worker is READY (bounded)."""
        async with asyncio.timeout(timeout):
            while any(w.status != READY for w in self.registry.all()):
                await asyncio.sleep(0.02)
        return True

    def _tick(self) -> None:
        now = self.now = self.loop.time()
        for ex in self.timers.expire(now):
            ex.on_timeout()
        if self.access_log is not None:
            self.access_log.flush()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            cfg = self.config
            for c in list(self.connections):
                c.check_timeouts(now, cfg)
            for w in self.registry.all():
                w.pool.sweep(now)
            self.policies.maintain(now)
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def inflight(self) -> int:
        return sum(1 for c in self.connections if c.busy is not None)

    async def shutdown(self, grace: float) -> None:
        """Stops accepting, turns readiness to 503, lets in-flight responses finish
        within ``grace`` seconds, then closes everything."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            if c.busy is None and c.req is None:
                c.close()
        deadline = self.loop.time() + grace
        while self.inflight() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            c.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for w in self.registry.all():
            w.pool.close()
        if self.access_log is not None:
            self.access_log.flush()
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()
            await self.metrics_server.wait_closed()
        if self.server is not None:
            await self.server.wait_closed()
