"""The Gateway: owns the listener, the worker registry, policies, the route table and
the periodic sweep (coarse clock, request deadlines, connection timeouts, idle pools).

Routing state lives in the registries (smg/workers/registry.py,
smg/routing/policies.py), changed only through their event methods.
"""
from __future__ import annotations

import asyncio
import logging
import time

from smg.config.schema import GatewayConfig
from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, Metrics, exposition
from smg.observability.observer import Observer
from smg.routing.policies import PolicyRegistry
from smg.server.protocol import HTTPServerProtocol
from smg.server.routes import Handlers
from smg.server.timers import TimerWheel
from smg.server.workers_api import WorkersAPI
from smg.workers.manager import WorkerManager
from smg.workers.registry import WorkerRegistry
from smg.workers.retry import RetryPolicy
from smg.workers.spec import validate
from smg.workers.worker import READY, Worker

log = logging.getLogger("smg.gateway")

TICK = 0.1           # clock and request-deadline resolution, seconds
SWEEP_EVERY = 0.5    # connection timeouts and idle-pool sweep, seconds


class _MetricsSite:
    """The Prometheus listener: the same HTTP protocol with one route, nothing recorded."""

    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self.config = gw.config
        self.request_id_priority = gw.request_id_priority
        self.connections: set = set()
        self.observer = None
        self.tracing = None
        self.draining = False
        self._registry = gw.metrics.registry()
        self.routes = {b"/metrics": {b"GET": self._metrics}}
        self.prefix_routes: list = []

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
        api = WorkersAPI(self)
        self.routes = {**Handlers(self).table(), **api.routes()}
        self.prefix_routes = api.prefix_routes()
        self.retry = RetryPolicy.from_config(config)
        self.workers = WorkerManager(self)
        self.request_id_priority = {h.encode(): i for i, h in enumerate(config.request_id_headers)}
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

    # -- workers ----------------------------------------------------------------------

    def add_worker(self, url: str, **spec) -> Worker:
        """Registers the worker at ``url`` (spec fields as in POST /workers)."""
        return self.workers.add(validate(dict(spec, url=url)))

    def record_outcome(self, w: Worker, ok: bool) -> None:
        # (smg_worker_cb_outcomes_total is read off the breaker's totals at scrape time)
        self.workers.record_outcome(w, ok)

    # -- observability hooks (no-ops without metrics) ------------------------------------

    def on_retry(self, ex, delay: float) -> None:
        m = self.metrics
        if m is not None:
            m.retries.inc((ex.worker.worker_type, ex.proto_path.decode("latin-1")))
            m.retry_backoff.observe((str(ex.attempt),), delay)

    def on_retries_exhausted(self, ex) -> None:
        if self.metrics is not None:
            self.metrics.retries_exhausted.inc((ex.worker.worker_type, ex.proto_path.decode("latin-1")))

    def on_breaker_transition(self, worker_id: str, url: str, old: str, new: str) -> None:
        if self.metrics is not None:
            self.metrics.cb_transitions.inc((url, old, new))

    def on_health_check(self, w: Worker, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.health_checks.inc((w.worker_type, "success" if ok else "failure"))

    def on_discovery_sync(self, source: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.discovery_sync.observe((source,), seconds)

    def on_discovery(self, source: str, kind: str, result: str) -> None:
        if self.metrics is not None:
            if kind == "registration":
                self.metrics.discovery_registrations.inc((source, result))
            else:
                self.metrics.discovery_deregistrations.inc((source, result))

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # request timing (durations, TTFT, the overhead header) needs sub-millisecond
        # resolution, which loop.time() (libuv's coarse clock) does not give; the native
        # SSE scanner reads the same CLOCK_MONOTONIC
        self.clock = time.monotonic
        if self.observer is not None:
            self.observer.clock = self.clock
        self.now = self.loop.time()
        for url in self.config.worker_urls:
            self.add_worker(url)
        self.workers.start()
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
        # rescheduled first: a failure below must never stop the clock, deadlines and sweeps
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        try:
            self._tick_once()
        except Exception:
            log.exception("periodic gateway sweep failed")

    def _tick_once(self) -> None:
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
            self.workers.sweep(now)
            self.policies.maintain(now)

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
        await self.workers.stop()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.access_log is not None:
            self.access_log.flush()
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()
            await self.metrics_server.wait_closed()
        if self.server is not None:
            await self.server.wait_closed()
