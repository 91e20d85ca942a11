"""The Gateway: builds the pipeline from the settings and owns the listeners and the
periodic tick (coarse clock, request deadlines, connection timeouts, idle pools).

Wiring, once at start-up: the worker registry and its manager; per-model policies;
selection; the exchange's dependencies (``ExchangeDeps``); the handlers; the endpoint
table bound to them with each route's filter chain; the API ``Site`` and the
Prometheus ``Site``. Each component receives what it uses, never the gateway.

Routing state lives in the registries (smg/workers/registry.py,
smg/routing/policies.py), changed only through their event methods; worker lifecycle
events reach the metrics through the event bus (smg/workers/events.py).
"""
from __future__ import annotations

import asyncio
import logging
import time

from smg.api.request_id import RequestIds
from smg.config.schema import GatewayConfig
from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, Metrics, exposition
from smg.observability.observer import Observer
from smg.routing.policies import PolicyRegistry
from smg.server.endpoints import ENDPOINTS, METRICS_ENDPOINTS, RouteTable
from smg.server.exchange import ExchangeDeps
from smg.server.handlers import Handlers, parse_body
from smg.server.protocol import HTTPServerProtocol
from smg.server.selection import Selector
from smg.server.site import Site
from smg.server.timers import TimerWheel
from smg.server.workers_api import WorkersAPI
from smg.upstream.http1_leg import Http1Leg
from smg.workers.events import EventBus
from smg.workers.manager import WorkerManager
from smg.workers.registry import WorkerRegistry
from smg.workers.retry import RetryPolicy
from smg.workers.spec import validate
from smg.workers.worker import READY, Worker

log = logging.getLogger("smg.gateway")

TICK = 0.1           # clock and request-deadline resolution, seconds
SWEEP_EVERY = 0.5    # connection timeouts and idle-pool sweep, seconds


class _MetricsHandlers:
    """The Prometheus listener's one handler."""

    def __init__(self, registry) -> None:
        self._registry = registry

    def metrics(self, conn, ctx) -> None:
        conn.reply(200, exposition(self._registry), content_type=b"text/plain; version=0.0.4; charset=utf-8")


def _open_leg(worker, owner) -> Http1Leg:
    return Http1Leg(worker.pool, owner)


class Gateway:
    def __init__(self, config: GatewayConfig, access_log=None, tracing=None) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        # request timing (durations, TTFT, the overhead header) needs sub-millisecond
        # resolution, which loop.time() (libuv's coarse clock) does not give; the native
        # SSE scanner reads the same CLOCK_MONOTONIC
        self.clock = time.monotonic
        self.timers = TimerWheel(TICK)
        self.registry = WorkerRegistry()
        self.events = EventBus()
        self.policies = PolicyRegistry(self.registry, config.policy, config)
        self.retry = RetryPolicy.from_config(config)
        self.workers = WorkerManager(config, self.registry, self.events, self.clock)
        request_ids = RequestIds(config.request_id_headers)
        self.access_log = access_log
        self.tracing = tracing
        self.site = site = Site(config, None, request_ids, self.clock, self.timers, tracing=tracing)
        self.metrics = None if config.disable_metrics else Metrics(
            self.registry, site.connections, self.workers.discovered_counts,
            tuple(config.prometheus_duration_buckets) or DEFAULT_DURATION_BUCKETS)
        if self.metrics is not None:
            self.events.subscribe(self.metrics.on_event)
        self.observer = site.observer = Observer(self.metrics, access_log, tracing, self.clock) \
            if (self.metrics or access_log or tracing) else None
        self.selector = Selector(self.registry, self.policies)
        self.deps = ExchangeDeps(
            config, self.retry, self.timers, now=lambda: site.now, clock=self.clock, schedule=self._call_later,
            selector=self.selector, open_leg=_open_leg, record_outcome=self.workers.record_outcome,
            on_retry=self._on_retry if self.metrics is not None else None,
            on_retries_exhausted=self._on_retries_exhausted if self.metrics is not None else None,
            tracing=tracing, observe=self.metrics is not None or access_log is not None)
        handlers = Handlers(self.deps, self.registry, self.policies, self.selector, site)
        self.routes = site.routes = RouteTable(
            ENDPOINTS, {"handlers": handlers, "workers_api": WorkersAPI(self.registry, self.workers)},
            self._chain_for)
        self.metrics_site = None if self.metrics is None else Site(
            config, RouteTable(METRICS_ENDPOINTS, {"handlers": _MetricsHandlers(self.metrics.registry())}),
            request_ids, self.clock)
        self.server: asyncio.base_events.Server | None = None
        self.metrics_server: asyncio.base_events.Server | None = None
        self._tick_handle = None
        self._next_sweep = 0.0

    # -- the filter chains ---------------------------------------------------------------

    def _chain_for(self, endpoint) -> tuple:
        """The filters of one route, in the pipeline's order (smg/server/filters.py):
        request id (at the head, Site.on_head) → auth → tenant → rate limit → admission
        → validation → selection. Stages not configured are left out, so they cost
        nothing; gateway-owned routes (health, models, Workers API) skip validation and
        selection."""
        stages: list = []
        if endpoint.proxied:
            stages.append(parse_body)          # validation: the body is a JSON object with what routing needs
            stages.append(self.selector.first)  # selection: model + role → worker
        return tuple(stages)

    # -- workers ----------------------------------------------------------------------

    def add_worker(self, url: str, **spec) -> Worker:
        """Registers the worker at ``url`` (spec fields as in POST /workers)."""
        return self.workers.add(validate(dict(spec, url=url)))

    # -- pipeline hooks -----------------------------------------------------------------

    def _call_later(self, delay: float, fn):
        return self.loop.call_later(delay, fn)

    def _on_retry(self, ctx, worker, attempt: int, delay: float) -> None:
        m = self.metrics
        m.retries.inc((worker.worker_type, ctx.endpoint.path))
        m.retry_backoff.observe((str(attempt),), delay)

    def _on_retries_exhausted(self, ctx, worker) -> None:
        self.metrics.retries_exhausted.inc((worker.worker_type, ctx.endpoint.path))

    # -- lifecycle --------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.site.now

    @property
    def connections(self) -> set:
        return self.site.connections

    @property
    def draining(self) -> bool:
        return self.site.draining

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._set_now(self.loop.time())
        for url in self.config.worker_urls:
            self.add_worker(url)
        self.workers.start()
        site = self.site
        self.server = await self.loop.create_server(
            lambda: HTTPServerProtocol(site), self.config.host, self.config.port, backlog=4096)
        if self.metrics_site is not None:
            msite = self.metrics_site
            try:
                self.metrics_server = await self.loop.create_server(
                    lambda: HTTPServerProtocol(msite), self.config.prometheus_host, self.config.prometheus_port)
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

    def _set_now(self, now: float) -> None:
        self.site.now = now
        if self.metrics_site is not None:
            self.metrics_site.now = now

    def _tick(self) -> None:
        # rescheduled first: a failure below must never stop the clock, deadlines and sweeps
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        try:
            self._tick_once()
        except Exception:
            log.exception("periodic gateway sweep failed")

    def _tick_once(self) -> None:
        now = self.loop.time()
        self._set_now(now)
        for ex in self.timers.expire(now):
            ex.on_timeout()
        if self.access_log is not None:
            self.access_log.flush()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            cfg = self.config
            for site in (self.site, self.metrics_site):
                if site is not None:
                    for c in list(site.connections):
                        c.check_timeouts(now, cfg)
            for w in self.registry.all():
                w.pool.sweep(now)
            self.workers.sweep()
            self.policies.maintain(now)

    def inflight(self) -> int:
        return self.site.inflight()

    async def shutdown(self, grace: float) -> None:
        """Stops accepting, turns readiness to 503, lets in-flight responses finish
        within ``grace`` seconds, then closes everything."""
        self.site.draining = True
        if self.server is not None:
            self.server.close()
        for c in list(self.site.connections):
            if not c.answering and c.ctx is None:
                c.close()
        deadline = self.loop.time() + grace
        while self.inflight() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.site.connections):
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
