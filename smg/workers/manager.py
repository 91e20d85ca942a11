"""WorkerManager: the lifecycle of workers, from a spec to removal.

Theory of operation: ``add(spec)`` creates the Worker (PENDING) with its circuit
breaker, its retry policy (when its spec's ``resilience`` section has retry fields)
and a pool shared by every logical worker of the same server, registers it, and
starts its registration job: learn its models (``GET /v1/models``; a server without
it but answering ``/health`` serves any model), expand data-parallel ranks when
``--dp-aware``, then hand it to the health checker, whose probes move it to READY
(the successful discovery counts as the first good probe). ``remove`` drains:
DRAINING at once (no new traffic), removal when its in-flight requests are done or
the settle time has passed.

Rules:
- Dependencies are narrow: the settings (``config``), the ``WorkerRegistry``, an
  event sink (``events.emit(record)``, an ``EventBus``) and a monotonic ``clock``.
  The loop is the running one (taken at ``start`` or at the first ``add``).
- Status and breaker changes go through the registry's event methods only; what
  observability needs (probe results, breaker transitions, discovery syncs and
  changes) leaves as records of ``smg.workers.events`` on ``events``.
- The health checker, load monitor and discovery sources are sans-I/O cores driven by
  their own tasks; this module only connects their callbacks to the registry.
- Every network use goes to ``worker.base_url`` (the address), never ``worker.url``
  (the logical key, ``base@rank`` for a DP rank).
- Every timeout and bound comes from the settings table.
- No worker address is used before the address guard (smg/workers/addresses.py) has
  judged it: link-local and cloud-metadata addresses are refused unless allow-listed.
- Every connection to an https worker (pool, registration, health, load) uses the one
  client context of ``tls`` (a ``smg.upstream.tls.WorkerTLS``; by default built from
  the settings).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson

from smg.errors import UpstreamError
from smg.upstream import client
from smg.upstream.pool import UpstreamPool
from smg.upstream.tls import WorkerTLS
from smg.workers.addresses import AddressGuard
from smg.workers.breaker import OPEN, CircuitBreaker
from smg.workers.discovery import FileDiscovery, KubeConfig, KubeDiscovery
from smg.workers.events import BreakerTransition, DiscoveryChanged, DiscoverySynced, HealthChecked
from smg.workers.health import HealthChecker
from smg.workers.loads import LoadMonitor
from smg.workers.registry import WorkerRegistry
from smg.workers.retry import RetryPolicy
from smg.workers.spec import DEFAULT_COST, DEFAULT_PRIORITY, SpecError, validate
from smg.workers.worker import DRAINING, FAILED, PENDING, READY, Worker

log = logging.getLogger("smg.workers")

# First wait before retrying a worker that is not answering yet; it doubles up to
# --worker-registration-max-backoff-secs.
REGISTRATION_FIRST_BACKOFF = 0.1
# How often a draining worker's in-flight count is looked at.
DRAIN_POLL = 0.05


class WorkerManager:
    def __init__(self, config, registry: WorkerRegistry, events, clock: Callable[[], float] = time.monotonic,
                 tls: WorkerTLS | None = None) -> None:
        self.config = config
        self.tls = tls if tls is not None else WorkerTLS.from_config(config)
        self.registry = registry
        self.events = events
        self.clock = clock
        self.guard = AddressGuard.from_config(config)  # refuses metadata-service worker addresses
        self.loop: asyncio.AbstractEventLoop | None = None
        self.retry = RetryPolicy.from_config(config)  # the gateway's policy, base of per-worker ones
        self.jobs: dict = {}      # worker id -> "pending" | "completed" | "failed"
        self._pools: dict = {}    # base url -> [pool, users]
        self._tasks: set = set()
        self._sources: list = []
        self.health = None if config.disable_health_check else HealthChecker.from_config(
            config, self._on_status, on_failed=self._on_failed, on_result=self._on_probe, clock=clock, tls=self.tls)
        self.loads = None if config.disable_load_monitoring else LoadMonitor.from_config(
            config, self._on_load, tls=self.tls)

    # -- start / stop ---------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return self.loop

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Starts the health checker, load monitor and discovery sources (on ``loop``,
        default the running loop)."""
        if loop is not None:
            self.loop = loop
        self._loop()
        cfg = self.config
        if self.health is not None:
            self.health.start()
        if self.loads is not None:
            self.loads.start()
        if cfg.discovery_file:
            self._source(FileDiscovery(cfg.discovery_file, lambda spec: self._discovered(spec, "file"),
                                       lambda url: self._undiscovered(url, "file"),
                                       interval=cfg.discovery_check_interval_secs,
                                       on_sync=lambda d: self.events.emit(DiscoverySynced("file", d))))
        if cfg.service_discovery:
            self._source(KubeDiscovery(KubeConfig.auto(cfg.kubeconfig or None),
                                       lambda spec: self._discovered(spec, "kubernetes"),
                                       lambda url: self._undiscovered(url, "kubernetes"),
                                       selector=tuple(cfg.selector),
                                       namespace=cfg.service_discovery_namespace or None,
                                       port=cfg.service_discovery_port,
                                       on_sync=lambda d: self.events.emit(DiscoverySynced("kubernetes", d))))

    def _source(self, src) -> None:
        self._sources.append(src)
        src.start()

    async def stop(self) -> None:
        for src in self._sources:
            await src.stop()
        if self.health is not None:
            await self.health.stop()
        if self.loads is not None:
            await self.loads.stop()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for pool, _ in self._pools.values():
            pool.close()

    def _spawn(self, coro) -> None:
        t = self._loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- adding ---------------------------------------------------------------------

    def add(self, spec: dict, worker_id: str | None = None) -> Worker:
        """Registers a worker from a validated spec; returns it (PENDING). Call on the loop.

        With ``--dp-aware`` and a ``dp_size`` in the spec, one logical worker per rank is
        registered and the rank-0 one returned.
        """
        dp_size = spec.get("dp_size")
        if self.config.dp_aware and dp_size and dp_size > 1 and spec.get("dp_rank") is None:
            first = None
            for rank in range(dp_size):
                w = self._new(dict(spec, dp_rank=rank), f"{worker_id}@{rank}" if worker_id else None)
                first = first or w
            return first
        return self._new(spec, worker_id)

    def _new(self, spec: dict, worker_id: str | None) -> Worker:
        models = tuple(c["id"] for c in spec.get("models") or ())
        w = Worker(spec["url"], models, worker_id, spec.get("worker_type", "regular"), dp_rank=spec.get("dp_rank"))
        w.model_cards = [dict(c, object="model") for c in spec.get("models") or ()]
        w.spec = {k: v for k, v in spec.items() if k != "api_key"}
        key = spec.get("api_key")
        w.api_key = key.encode() if key else None
        w.runtime = spec.get("runtime_type", "unspecified")
        w.dp_size = spec.get("dp_size")
        res = spec.get("resilience") or {}
        w.breaker = CircuitBreaker.from_config(self.config, res, label=w.id, on_transition=self._on_breaker,
                                               now=self.clock())
        w.retry = self.retry.for_worker(res)
        w.pool = self._pool_for(w)
        self.registry.add(w)
        self.jobs[w.id] = "pending"
        self._spawn(self._register(w))
        return w

    def _pool_for(self, w: Worker) -> UpstreamPool:
        entry = self._pools.get(w.base_url)
        if entry is None:
            cfg = self.config
            pool = UpstreamPool.from_config(self._loop(), w.host, w.port, cfg, ssl=self.tls.for_url(w.base_url))
            entry = self._pools[w.base_url] = [pool, 0]
        entry[1] += 1
        return entry[0]

    def _release_pool(self, base_url: str) -> None:
        entry = self._pools.get(base_url)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self._pools[base_url]

    def _auth(self, w: Worker) -> list | None:
        return [("authorization", "Bearer " + w.api_key.decode())] if w.api_key else None

    async def _register(self, w: Worker) -> None:
        refused = await self.guard.check(w.base_url)  # before anything reaches the address
        if refused is not None:
            log.error("worker %s not registered: %s", w.url, refused)
            self._finalize(w)
            return
        cfg = self.config
        timeout = cfg.worker_probe_timeout_secs
        cap = cfg.worker_registration_max_backoff_secs
        delay = min(REGISTRATION_FIRST_BACKOFF, cap)
        while self.registry.get(w.id) is w:
            try:
                if not w.models:
                    await self._discover_models(w)
                break
            except UpstreamError as e:
                try:
                    status, _, _ = await client.request(w.base_url, "GET", "/health", headers=self._auth(w),
                                                        timeout=timeout, ssl=self.tls.for_url(w.base_url))
                except UpstreamError:
                    status = 0
                if 200 <= status < 300:
                    log.info("worker %s has no model list (%s): it serves any model", w.url, e)
                    break
                log.warning("worker %s not answering yet: %s", w.url, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
        if self.registry.get(w.id) is not w:
            return
        if cfg.dp_aware and w.dp_rank is None and await self._expand_dp(w):
            return
        self.jobs[w.id] = "completed"
        hc = w.spec.get("health") or {}
        if self.health is None or hc.get("disable_health_check"):
            self.registry.set_status(w, READY)
        else:
            self.health.add(w, api_key=w.api_key.decode() if w.api_key else None,
                            success_threshold=hc.get("success_threshold"),
                            failure_threshold=hc.get("failure_threshold"),
                            interval=hc.get("check_interval_secs"))
            self.health.apply(w, True)  # the answered discovery is the first good probe
        if self.loads is not None:
            self.loads.add(w, None if w.runtime == "unspecified" else w.runtime,
                           w.api_key.decode() if w.api_key else None)
        log.info("worker %s registered (%s), models %s", w.url, w.id, list(w.models) or "any")

    async def _discover_models(self, w: Worker) -> None:
        status, _, body = await client.request(w.base_url, "GET", "/v1/models", headers=self._auth(w),
                                               timeout=self.config.worker_probe_timeout_secs,
                                               ssl=self.tls.for_url(w.base_url))
        if not 200 <= status < 300:
            raise UpstreamError(f"GET /v1/models answered {status}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError("GET /v1/models did not return JSON") from None
        cards = [m for m in (data.get("data") or []) if isinstance(m, dict) and isinstance(m.get("id"), str)] \
            if isinstance(data, dict) else []
        owned = {c.get("owned_by") for c in cards}
        if w.runtime == "unspecified":
            for rt in ("sglang", "vllm"):
                if rt in owned:
                    w.runtime = rt
        self.registry.set_models(w, tuple(c["id"] for c in cards), cards)

    async def _expand_dp(self, w: Worker) -> bool:
        """Asks the server for its dp_size; with more than one rank, replaces ``w`` by one
        logical worker per rank. Returns True if it did."""
        try:
            status, _, body = await client.request(w.base_url, "GET", "/get_server_info", headers=self._auth(w),
                                                   timeout=self.config.worker_probe_timeout_secs,
                                                   ssl=self.tls.for_url(w.base_url))
            info = orjson.loads(body) if 200 <= status < 300 else {}
        except (UpstreamError, ValueError):
            info = {}
        size = info.get("dp_size") if isinstance(info, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size <= 1:
            return False
        spec = dict(w.spec, dp_size=size, models=w.model_cards or w.spec.get("models") or [])
        if w.api_key:
            spec["api_key"] = w.api_key.decode()
        self._finalize(w)
        for rank in range(size):
            self._new(dict(spec, dp_rank=rank), None)
        return True

    # -- discovery sources -----------------------------------------------------------

    def discovered_counts(self) -> list:
        """[(source, number of workers it currently lists)] for each running source."""
        counts: dict = {}
        for src in self._sources:
            counts[src.source] = counts.get(src.source, 0) + len(src.workers)
        return list(counts.items())

    def _discovered(self, spec: dict, source: str) -> None:
        try:
            clean = validate({k: v for k, v in spec.items() if k != "source"})
        except SpecError as e:
            log.warning("%s discovery: bad worker %s: %s", source, spec.get("url"), e)
            self.events.emit(DiscoveryChanged(source, "registration", "invalid"))
            return
        refused = self.guard.refusal(clean["url"])  # a host name is judged by _register's lookup
        if refused is not None:
            log.warning("%s discovery: worker not registered: %s", source, refused)
            self.events.emit(DiscoveryChanged(source, "registration", "invalid"))
            return
        if self.registry.at_address(clean["url"]):
            return
        if "api_key" not in clean and self.config.api_key:
            clean["api_key"] = self.config.api_key  # SMG: --api-key is discovered workers' default key
        self.add(clean)
        self.events.emit(DiscoveryChanged(source, "registration", "success"))

    def _undiscovered(self, url: str, source: str) -> None:
        for w in self.registry.at_address(url):
            self.remove(w.id)
        self.events.emit(DiscoveryChanged(source, "deregistration", "removed"))

    # -- removing ---------------------------------------------------------------------

    def remove(self, worker_id: str, drain: bool = True) -> Worker | None:
        """Stops new traffic to the worker at once; removes it when idle (bounded)."""
        w = self.registry.get(worker_id)
        if w is None:
            return None
        if self.health is not None:
            self.health.remove(w)
        if self.loads is not None:
            self.loads.remove(w)
        self.registry.set_status(w, DRAINING)
        settle = (w.spec.get("health") or {}).get("drain_settle_secs", self.config.drain_settle_secs)
        if not drain or w.inflight == 0 or settle <= 0:
            self._finalize(w)
        else:
            self._spawn(self._drain(w, settle))
        return w

    async def _drain(self, w: Worker, settle: float) -> None:
        loop = self._loop()
        deadline = loop.time() + settle
        while w.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        self._finalize(w)

    def _finalize(self, w: Worker) -> None:
        if self.registry.remove(w.id) is not None:
            self._release_pool(w.base_url)
            self.jobs.pop(w.id, None)

    # -- callbacks from the cores ------------------------------------------------------

    def _on_status(self, w: Worker, status: str) -> None:
        if self.registry.get(w.id) is w and (w.status != DRAINING or status == DRAINING):
            self.registry.set_status(w, status)

    def _on_failed(self, w: Worker) -> None:
        log.warning("worker %s failed its health checks: removing it", w.url)
        self.remove(w.id, drain=False)

    def _on_probe(self, w: Worker, ok: bool) -> None:
        self.events.emit(HealthChecked(w.id, w.url, w.worker_type, ok))

    def _on_load(self, w: Worker, report: dict | None) -> None:
        w.engine = report

    def _on_breaker(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        w = self.registry.get(breaker.label)
        if w is not None:
            self.registry.set_breaker_open(w, new == OPEN)
            log.warning("worker %s circuit breaker %s -> %s", w.url, old, new)
        self.events.emit(BreakerTransition(breaker.label, w.url if w else breaker.label, old, new))

    def record_outcome(self, w: Worker, ok: bool) -> None:
        """One request outcome for ``w``'s breaker (the hot path: no event unless it moves)."""
        if w.breaker is not None:
            w.breaker.record(ok, self.clock())

    def sweep(self, now: float | None = None) -> None:
        """Lets open breakers whose timeout passed move to half-open (lazy in the core).
        ``now`` defaults to the manager's clock (the one outcomes are recorded with)."""
        if now is None:
            now = self.clock()
        for w in self.registry.all():
            if w.breaker_open:
                w.breaker.state_at(now)

    def info(self, w: Worker) -> dict:
        """WorkerInfo as the API shows it (never the api_key)."""
        now = self.clock()
        spec = w.spec
        return {
            "id": w.id, "url": w.url, "model_id": w.models[0] if w.models else None, "models": list(w.models),
            "worker_type": w.worker_type, "connection_mode": spec.get("connection_mode", "http"),
            "runtime_type": w.runtime, "labels": spec.get("labels", {}), "priority": spec.get("priority", DEFAULT_PRIORITY),
            "cost": spec.get("cost", DEFAULT_COST), "bootstrap_port": spec.get("bootstrap_port"),
            "dp_rank": w.dp_rank, "dp_size": w.dp_size, "is_healthy": w.status == READY, "status": w.status,
            "load": w.inflight, "job_status": self.jobs.get(w.id, "completed"),
            "circuit_breaker": w.breaker.stats(now) if w.breaker is not None else None,
            "health": spec.get("health", {}), "resilience": spec.get("resilience", {}),
            "has_api_key": w.api_key is not None,
        }


__all__ = ["WorkerManager", "PENDING", "FAILED"]
