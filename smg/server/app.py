"""The Gateway: builds the pipeline from the settings and owns the listeners and the
periodic tick (coarse clock, request deadlines, connection timeouts, idle pools).

Wiring, once at start-up: the worker registry and its manager; per-model policies;
selection; the exchange's dependencies (``ExchangeDeps``); the handlers; the endpoint
table bound to them with each route's filter chain; the API ``Site`` and the
Prometheus ``Site``. Each component receives what it uses, never the gateway.

Routing state lives in the registries (smg/workers/registry.py,
smg/routing/policies.py), changed only through their event methods; worker lifecycle
events reach the metrics through the event bus (smg/workers/events.py).

TLS (smg/server/tls.py, smg/upstream/tls.py): with ``--tls-cert-path`` the API
listener serves HTTPS (the Prometheus listener stays plain); ``reload_tls()`` re-reads
the certificate for new connections. https workers share one client context
(``worker_tls``).

SIGHUP (when the gateway runs in the main thread) calls ``on_sighup``: ``reload_tls``
by default, the configuration reload when smg/cli.py sets it; that one hands the new
settings to ``reconfigure``, all or nothing (smg/server/reload.py). Listening sockets
may be handed over (``sockets``: systemd socket activation, smg/server/systemd.py).

Auth (smg/auth): ``Auth`` picks each route's first filter from its endpoint's
``access`` (data-plane keys, control-plane keys/JWT, or none); with
``--control-plane-port`` the admin rows are served by a third ``Site`` of their own and
the API listener answers 404 on them. ``security_posture()`` is the start-up line.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

from smg.admission.admit import LegacyAdmission, build as build_admission
from smg.admission.tenant_limits import build as build_tenant_limits
from smg.admission.tenants import TenantResolver
from smg.api.request_id import RequestIds
from smg.auth import Auth
from smg.auth.posture import describe as describe_posture
from smg.config.schema import GatewayConfig
from smg.errors import ConfigError
from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, Metrics, exposition
from smg.observability.observer import Observer
from smg.routing.policies import PolicyRegistry
from smg.server import address_filter, h2_connection, reload
from smg.server.body_budget import BodyBudget
from smg.server.cors import CorsPolicy
from smg.server.endpoints import ENDPOINTS, METRICS_ENDPOINTS, RouteTable
from smg.server.exchange import ExchangeDeps
from smg.server.fanout import FanoutRoutes
from smg.server.grpc_exchange import GrpcDeps, routing_prompt
from smg.server.filters import Reply
from smg.history import build as build_history
from smg.history.metered import MeteredStore
from smg.responses.api import ResponsesAPI
from smg.responses.mcp import McpMetrics
from smg.responses.conversations import ConversationsAPI
from smg.server.handlers import Handlers, parse_body
from smg.server.parse_handlers import ParseAPI
from smg.server.pd_exchange import PdDeps
from smg.server.pd_selection import DECODE, PREFILL, PdSelector
from smg.server.protocol import HTTPServerProtocol, TLSServerProtocol
from smg.server.selection import Selector
from smg.server.site import Site
from smg.server.timers import TimerWheel
from smg.server.tokenizer_api import TokenizerAPI, load_startup
from smg.server.tls import ServerTLS
from smg.server.workers_api import WorkersAPI
from smg.upstream.forwarding import Forwarding
from smg.upstream.http1_leg import Http1Leg
from smg.text.registry import TokenizerRegistry
from smg.upstream.tls import WorkerTLS
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


def _leg_factory(forwarding: Forwarding):
    """``open_leg(worker, owner)`` for the exchange: HTTP/1.1 legs forwarding as configured."""
    def open_leg(worker, owner) -> Http1Leg:
        return Http1Leg(worker.pool, owner, forwarding)
    return open_leg


async def _bind(create, host: str, port: int, what: str = "main "):
    """Awaits ``create`` (a ``create_server`` call); an OSError is raised again naming the
    listener and the address that failed (``cannot listen on 127.0.0.1:9090 (metrics
    listener): address already in use``)."""
    try:
        return await create
    except OSError as e:
        where = f"[{host}]:{port}" if ":" in (host or "") else f"{host or '0.0.0.0'}:{port}"
        why = os.strerror(e.errno) if e.errno else (e.strerror or str(e))
        raise OSError(e.errno, f"cannot listen on {where} ({what}listener): {why.lower()}") from e


class Gateway:
    def __init__(self, config: GatewayConfig, access_log=None, tracing=None, sockets: dict | None = None) -> None:
        self.config = config
        # listening sockets handed over (systemd socket activation): {"api"|"metrics"|"control": socket}
        self.sockets = dict(sockets or {})
        self.loop: asyncio.AbstractEventLoop | None = None
        # request timing (durations, TTFT, the overhead header) needs sub-millisecond
        # resolution, which loop.time() (libuv's coarse clock) does not give; the native
        # SSE scanner reads the same CLOCK_MONOTONIC
        self.clock = time.monotonic
        self.timers = TimerWheel(TICK)
        self.registry = WorkerRegistry()
        self.tokenizers = TokenizerRegistry()  # the gateway's tokenizers (smg/server/tokenizer_api.py)
        self.events = EventBus()
        self.policies = PolicyRegistry(self.registry, config.policy, config)
        self.retry = RetryPolicy.from_config(config)
        h2_connection.check_config(config)                # HTTP/2 settings within RFC 9113's bounds
        self.tls = ServerTLS.from_config(config)          # None: the listener is plain HTTP
        self.worker_tls = WorkerTLS.from_config(config)   # the client context of https workers
        self.workers = WorkerManager(config, self.registry, self.events, self.clock, tls=self.worker_tls,
                                     tokenizers=self.tokenizers)
        request_ids = RequestIds(config.request_id_headers)
        self.access_log = access_log
        self.tracing = tracing
        self.site = site = Site(config, None, request_ids, self.clock, self.timers, tracing=tracing)
        site.cors = CorsPolicy.from_config(config)
        site.body_budget = BodyBudget.from_config(config)  # one budget, every listener's bodies
        self.metrics = None if config.disable_metrics else Metrics(
            self.registry, site.connections, self.workers.discovered_counts,
            tuple(config.prometheus_duration_buckets) or DEFAULT_DURATION_BUCKETS)
        if self.metrics is not None:
            self.events.subscribe(self.metrics.on_event)
            if config.cache_feedback:
                self.metrics.add_cache_feedback(self.policies.feedback_totals)
        self.observer = site.observer = Observer(self.metrics, access_log, tracing, self.clock,
                                                 self.retry.retryable_status) \
            if (self.metrics or access_log or tracing) else None
        self.selector = Selector(self.registry, self.policies, panic=self.config.panic_routing,
                                 prepare=routing_prompt(self.tokenizers))
        # tenant resolution (only when something reads ctx.tenant) and tenant rate limits
        self.tenant_resolver = TenantResolver.from_config(config, Reply)
        self.tenant_limits = build_tenant_limits(config, lambda: site.now, parse_body, Reply)
        # admission: the legacy concurrency limiter or the priority scheduler (None: off)
        self.admission = build_admission(config, registry=self.registry, ready=READY, reply=Reply,
                                         timers=self.timers, now=lambda: site.now, metrics=self.metrics)
        if self.metrics is not None and isinstance(self.admission, LegacyAdmission):
            core = self.admission.core
            self.metrics.add_admission_inflight(lambda: core.holding(site.now))
        open_leg = _leg_factory(Forwarding.from_config(config))
        if self.metrics is not None:  # smg_worker_routing_keys_active: keys held from each send
            open_leg = self.metrics.routing_keys.wrap(open_leg)
        self.deps = ExchangeDeps(
            config, self.retry, self.timers, now=lambda: site.now, clock=self.clock, schedule=self._call_later,
            selector=self.selector, open_leg=open_leg,
            record_outcome=self.workers.record_outcome,
            # retries: counted per attempt here; running out is read off the request's shape
            on_retry=self.metrics.on_retry if self.metrics is not None else None,
            tracing=tracing,
            # usage is kept for metrics, the access log, tenant rate-limit settlement and
            # cache_aware's closed loop (--cache-feedback)
            observe=self.metrics is not None or access_log is not None or self.tenant_limits is not None
            or config.cache_feedback)
        # gRPC workers: the gateway is the full server (template, tokens, detokenization)
        self.grpc_deps = GrpcDeps(config, self.tokenizers, self.selector, self.retry, self.workers.record_outcome,
                                  observe=self.deps.observe)
        # --pd-disaggregation: pair selection (a policy registry per role) and the PD exchange
        self.pd_selector = None
        pd = None
        if config.pd_disaggregation:
            self.pd_selector = PdSelector(
                self.registry, self.selector,
                PolicyRegistry(self.registry, config.prefill_policy or config.policy, config, role=PREFILL),
                PolicyRegistry(self.registry, config.decode_policy or config.policy, config, role=DECODE))
            if self.metrics is not None:
                self.metrics.add_pd()
            pd = PdDeps(self.pd_selector,
                        on_prefill_done=self.metrics.on_pd_prefill if self.metrics is not None else None,
                        on_bootstrap_failure=self.metrics.on_pd_bootstrap_failure
                        if self.metrics is not None else None)
        handlers = Handlers(self.deps, self.registry, self.policies, self.selector, site, grpc=self.grpc_deps,
                            pd=pd)
        # the Responses and Conversations APIs over the history store (smg/history), with
        # the smg_db_* metrics around it, and the MCP servers of --mcp-config-path
        self.history = build_history(config)
        self.mcp_servers = None
        if config.mcp_config_path:
            from smg.mcp.config import load as load_mcp
            from smg.mcp.servers import ConfiguredServers
            self.mcp_servers = ConfiguredServers(load_mcp(config.mcp_config_path))
        mcp_metrics = None
        if self.metrics is not None:
            h = self.history
            ops, op_duration = self.metrics.add_storage(h.name, getattr(h, "open_connections", None),
                                                        getattr(h, "records", None))
            self.history = MeteredStore(h, ops, op_duration)
            mcp_metrics = McpMetrics(*self.metrics.add_mcp(
                self.mcp_servers.active if self.mcp_servers is not None else None))
        responses = ResponsesAPI(self.history, handlers.proxy, config.request_timeout_secs,
                                 config.max_background_responses, self.mcp_servers, mcp_metrics)
        # auth (smg/auth): each route's first stage, by its endpoint's ``access``
        self.auth = Auth(config, Reply, clock=self.clock)
        providers = {"handlers": handlers, "workers_api": WorkersAPI(self.registry, self.workers),
                     "fanout": FanoutRoutes(self.deps, self.registry, self.selector, tls=self.worker_tls),
                     "parse_api": ParseAPI(), "tokenizer_api": TokenizerAPI(self.tokenizers),
                     "responses": responses,
                     "conversations": ConversationsAPI(self.history, config.request_timeout_secs)}
        self._stages = {"responses": responses}
        # --control-plane-port: the admin rows get their own listener; the main one 404s them
        control_rows = tuple(e for e in ENDPOINTS if e.access == "admin") \
            if config.control_plane_port >= 0 else ()
        if not control_rows and config.control_plane_host != "127.0.0.1":
            raise ConfigError("--control-plane-host", "needs --control-plane-port (a control-plane listener)")
        self.routes = site.routes = RouteTable(
            tuple(e for e in ENDPOINTS if e not in control_rows), providers, self._chain_for)
        self.control_site = Site(config, RouteTable(control_rows, providers, self._chain_for), request_ids,
                                 self.clock, self.timers, observer=self.observer, tracing=tracing) \
            if control_rows else None
        if self.control_site is not None:
            self.control_site.cors, self.control_site.body_budget = site.cors, site.body_budget
        self.control_server: asyncio.base_events.Server | None = None
        self.metrics_site = None if self.metrics is None else Site(
            config, RouteTable(METRICS_ENDPOINTS, {"handlers": _MetricsHandlers(self.metrics.registry())}),
            request_ids, self.clock)
        self.server: asyncio.base_events.Server | None = None
        self.metrics_server: asyncio.base_events.Server | None = None
        self._tick_handle = None
        self._next_sweep = 0.0
        self._sighup = False
        #: what SIGHUP calls (when the gateway runs in the main thread): the TLS reload by
        #: default; smg/cli.py puts the configuration reload (which includes it) here
        self.on_sighup = self.reload_tls if self.tls is not None else None

    # -- the filter chains ---------------------------------------------------------------

    def _chain_for(self, endpoint) -> tuple:
        """The filters of one route, in the pipeline's order (smg/server/filters.py):
        request id (at the head, Site.on_head) → auth → tenant → rate limit → admission
        → validation → selection. Stages not configured are left out, so they cost
        nothing; gateway-owned routes (health, models, Workers API) skip validation and
        selection."""
        stages: list = []
        auth = self.auth.stage(endpoint)       # auth: first, on every route that needs it
        if auth is not None:
            stages.append(auth)
        guard = address_filter.for_endpoint(endpoint, self.workers.guard)
        if guard is not None:
            stages.append(guard)               # validation: a worker's address is no metadata service
        if endpoint.proxied:
            if self.tenant_resolver is not None:
                stages.append(self.tenant_resolver)  # tenant: ctx.tenant (auth:/header:/ip:/anonymous)
            if self.tenant_limits is not None:
                stages.append(self.tenant_limits)    # tenant rate limit: reserve now, settle at the end
            if self.admission is not None:
                stages.append(self.admission)        # admission: a slot (or a queue place) per request
            stages.append(parse_body)          # validation: the body is a JSON object with what routing needs
            if endpoint.stage:                 # the route's own stage (the Responses API's history load)
                stages.append(getattr(self._stages[endpoint.provider], endpoint.stage))
            # selection: model + role → worker (a prefill/decode pair in PD mode)
            stages.append(self.pd_selector.first if self.pd_selector is not None else self.selector.first)
        return tuple(stages)

    # -- workers ----------------------------------------------------------------------

    def add_worker(self, url: str, **spec) -> Worker:
        """Registers the worker at ``url`` (spec fields as in POST /workers)."""
        return self.workers.add(validate(dict(spec, url=url)))

    # -- pipeline hooks -----------------------------------------------------------------

    def _call_later(self, delay: float, fn):
        return self.loop.call_later(delay, fn)

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
        cfg = self.config
        # a worker URL naming one of the gateway's own listeners would recurse: refused
        # before anything binds (ports known), then again with the bound addresses
        guard = self.workers.guard
        guard.listeners = [(h, p) for h, p, on in (
            (cfg.host, cfg.port, True), (cfg.prometheus_host, cfg.prometheus_port, self.metrics_site is not None),
            (cfg.control_plane_host, cfg.control_plane_port, self.control_site is not None)) if on and p]
        for url in cfg.worker_urls:
            loop_msg = guard.refusal(url)
            if loop_msg is not None and "own listener" in loop_msg:
                raise ConfigError("--worker-urls", loop_msg)
        # --tokenizer-path / --model-path: loaded off the loop before anything binds (a path
        # that is not local, or that does not load, stops start-up)
        await self.loop.run_in_executor(None, load_startup, cfg, self.tokenizers)
        await self.history.start()   # a database backend connects (and migrates when asked) first
        if self.mcp_servers is not None:   # configured MCP servers: connected, tools listed
            try:
                await self.mcp_servers.start()
            except BaseException:
                await self.history.close()
                raise
        site = self.site
        tls = self.tls
        where = self._where("api", cfg.host, cfg.port)
        if tls is None:
            self.server = await _bind(self.loop.create_server(
                lambda: HTTPServerProtocol(site), **where, backlog=4096), cfg.host, cfg.port)
        else:
            self.server = await _bind(self.loop.create_server(
                lambda: TLSServerProtocol(site), **where, backlog=4096,
                ssl=tls.context, ssl_handshake_timeout=cfg.header_read_timeout_secs), cfg.host, cfg.port)
        if self.metrics_site is not None:
            msite = self.metrics_site
            try:
                self.metrics_server = await _bind(self.loop.create_server(
                    lambda: HTTPServerProtocol(msite), **self._where("metrics", cfg.prometheus_host,
                                                                     cfg.prometheus_port)),
                    cfg.prometheus_host, cfg.prometheus_port, "metrics ")
            except OSError:
                self.server.close()
                raise
        if self.control_site is not None:
            await self._start_control_listener()
        if self.on_sighup is not None and threading.current_thread() is threading.main_thread():
            hook = self.on_sighup
            self.loop.add_signal_handler(signal.SIGHUP, lambda: hook())
            self._sighup = True
        guard.listeners = [s.getsockname()[:2] for srv in (self.server, self.metrics_server, self.control_server)
                           if srv is not None for s in srv.sockets]
        key = {"api_key": cfg.api_key} if cfg.api_key else {}  # SMG: --api-key is their default
        for url in cfg.worker_urls:
            self.add_worker(url, **key)
        for url, port in cfg.prefill:
            self.add_worker(url, worker_type=PREFILL, **({"bootstrap_port": port} if port is not None else {}), **key)
        for url in cfg.decode:
            self.add_worker(url, worker_type=DECODE, **key)
        self.workers.start()
        self.auth.start()
        self._tick()

    async def _start_control_listener(self) -> None:
        csite, tls = self.control_site, self.tls
        kw = {} if tls is None else {"ssl": tls.context,
                                     "ssl_handshake_timeout": self.config.header_read_timeout_secs}
        proto = HTTPServerProtocol if tls is None else TLSServerProtocol
        try:
            self.control_server = await _bind(self.loop.create_server(
                lambda: proto(csite), **self._where("control", self.config.control_plane_host,
                                                    self.config.control_plane_port), **kw),
                self.config.control_plane_host, self.config.control_plane_port, "control-plane ")
        except OSError:
            self.server.close()
            if self.metrics_server is not None:
                self.metrics_server.close()
            raise

    def _where(self, listener: str, host: str, port: int) -> dict:
        """``create_server`` keywords of one listener: its handed-over socket, else host and port."""
        sock = self.sockets.get(listener)
        return {"sock": sock} if sock is not None else {"host": host, "port": port}

    @property
    def control_port(self) -> int:
        """Port of the separate control-plane listener (``--control-plane-port``)."""
        return self.control_server.sockets[0].getsockname()[1]

    def security_posture(self) -> tuple:
        """``(exposed, line)``: what each class of route demands, the open ones named
        (smg/auth/posture.py); printed at start-up."""
        where = None if self.control_server is None else f"{self.config.control_plane_host}:{self.control_port}"
        return describe_posture(self.auth, ENDPOINTS, where)

    def reconfigure(self, new: GatewayConfig) -> list:
        """Applies a re-read configuration (smg/server/reload.py says which settings may
        change): new tenant/control-plane keys checked, TLS files re-read (either failing
        refuses the reload), then the keys put in place, cache_aware's
        parameters (trees kept), retry, breaker and probe-interval settings (breaker
        state kept), then the worker list (new URLs registered, dropped ones
        drained; the others untouched). Returns the changed setting names.

        Raises:
            ReloadRefused: nothing was applied; the message names what is at fault.
        """
        changes = reload.plan(self.config, new, self.tls is not None)
        old_urls, new_urls = list(self.config.worker_urls), list(new.worker_urls)
        for url in new_urls:
            if url not in old_urls:
                why = self.workers.guard.refusal(url)
                if why is not None:
                    raise reload.ReloadRefused(f"--worker-urls: {why}")
        try:  # keys: checked now, put in place with the rest
            rekey = self.auth.rekeying(new) if {"tenant_api_key", "control_plane_api_keys"} & set(changes) else None
        except ConfigError as e:
            raise reload.ReloadRefused(str(e)) from None
        if self.tls is not None:
            if not self.tls.reload_from(new.tls_cert_path, new.tls_key_path, new.tls_client_ca_path):
                raise reload.ReloadRefused(f"--tls-cert-path: the TLS material ({new.tls_cert_path}, "
                                           f"{new.tls_key_path}) does not load")
        if rekey is not None:
            rekey()
        self.policies.reconfigure(new)
        # retries, breakers, probe interval: requests already running keep the policy they began with
        self.retry = self.deps.retry = self.grpc_deps.retry = self.workers.reconfigure(new)
        self.config = new
        key = {"api_key": new.api_key} if new.api_key else {}
        for url in old_urls:
            if url not in new_urls:
                for w in self.registry.at_address(url):
                    self.workers.remove(w.id, drain=True)
        for url in new_urls:
            if url not in old_urls:
                self.add_worker(url, **key)
        return changes

    def reload_tls(self) -> bool:
        """Re-reads the listener's certificate and key for new connections (SIGHUP).
        Safe from any thread. Returns False when TLS is off or the new material does not
        load (the current certificate stays; the error is logged)."""
        return self.tls.reload() if self.tls is not None else False

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
        if self.control_site is not None:
            self.control_site.now = now

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
            for site in (self.site, self.metrics_site, self.control_site):
                if site is not None:
                    for c in list(site.connections):
                        c.check_timeouts(now, cfg)
            for w in self.registry.all():
                w.pool.sweep(now)
            self.workers.sweep()
            self.policies.maintain(now)
            if self.pd_selector is not None:
                self.pd_selector.prefill_policies.maintain(now)
                self.pd_selector.decode_policies.maintain(now)

    def inflight(self) -> int:
        return self.site.inflight()

    async def shutdown(self, grace: float) -> None:
        """Stops accepting, turns readiness to 503, lets in-flight responses finish
        within ``grace`` seconds, then closes everything."""
        self.site.draining = True
        if self._sighup:
            self._sighup = False
            self.loop.remove_signal_handler(signal.SIGHUP)
        if self.server is not None:
            self.server.close()
        if self.control_server is not None:
            self.control_server.close()
            for c in list(self.control_site.connections):
                c.close()
        for c in list(self.site.connections):
            c.drain()  # idle ones close; HTTP/2 ones send GOAWAY and let open streams finish
        deadline = self.loop.time() + grace
        while self.inflight() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.site.connections):
            c.close()
        await self.workers.stop()
        await self.history.close()
        if self.mcp_servers is not None:
            await self.mcp_servers.close()
        self.auth.stop()
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
