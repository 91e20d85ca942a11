"""WorkerManager: the lifecycle of workers, from a spec to removal.

Theory of operation: ``add(spec)`` creates the Worker (PENDING) with its circuit
breaker and a pool shared by every logical worker of the same server, registers it,
and starts its registration job: learn its models (``GET /v1/models``; a server
without it but answering ``/health`` serves any model), expand data-parallel ranks
when ``--dp-aware``, then hand it to the health checker, whose probes move it to READY
(the successful discovery counts as the first good probe). ``remove`` drains:
DRAINING at once (no new traffic), removal when its in-flight requests are done or
the settle time has passed.

Rules:
- Status and breaker changes go through the registry's event methods only.
- The health checker, load monitor and discovery sources are sans-I/O cores driven by
  their own tasks; this module only connects their callbacks to the registry.
"""
from __future__ import annotations

import asyncio
import logging

from smg.errors import UpstreamError
from smg.upstream import client
from smg.upstream.pool import UpstreamPool
from smg.workers.breaker import OPEN, CircuitBreaker
from smg.workers.discovery import FileDiscovery, KubeConfig, KubeDiscovery
from smg.workers.health import HealthChecker
from smg.workers.loads import LoadMonitor
from smg.workers.worker import DRAINING, FAILED, PENDING, READY, Worker

log = logging.getLogger("smg.workers")

REGISTRATION_MAX_BACKOFF = 5.0


class WorkerManager:
    def __init__(self, gw) -> None:
        self.gw = gw
        cfg = gw.config
        self.registry = gw.registry
        self.jobs: dict = {}      # worker id -> "pending" | "completed" | "failed"
        self._pools: dict = {}    # base url -> [pool, users]
        self._tasks: set = set()
        self._sources: list = []
        self.health = None if cfg.disable_health_check else HealthChecker(
            self._on_status, endpoint=cfg.health_check_endpoint, interval=cfg.health_check_interval_secs,
            timeout=cfg.health_check_timeout_secs, success_threshold=cfg.health_success_threshold,
            failure_threshold=cfg.health_failure_threshold, startup_interval=cfg.worker_startup_check_interval,
            remove_unhealthy=cfg.remove_unhealthy_workers, on_failed=self._on_failed,
            on_result=self._on_probe)
        self.loads = None if cfg.disable_load_monitoring else LoadMonitor(
            self._on_load, interval=cfg.load_monitor_interval)

    # -- start / stop ---------------------------------------------------------------

    def start(self) -> None:
        cfg = self.gw.config
        if self.health is not None:
            self.health.start()
        if self.loads is not None:
            self.loads.start()
        if cfg.discovery_file:
            src = FileDiscovery(cfg.discovery_file, lambda spec: self._discovered(spec, "file"),
                                lambda url: self._undiscovered(url, "file"),
                                interval=cfg.discovery_check_interval_secs,
                                on_sync=lambda d: self.gw.on_discovery_sync("file", d))
            self._sources.append(src)
            src.start()
        if cfg.service_discovery:
            kube = KubeDiscovery(KubeConfig.auto(cfg.kubeconfig or None),
                                 lambda spec: self._discovered(spec, "kubernetes"),
                                 lambda url: self._undiscovered(url, "kubernetes"),
                                 selector=tuple(cfg.selector), namespace=cfg.service_discovery_namespace or None,
                                 port=cfg.service_discovery_port,
                                 on_sync=lambda d: self.gw.on_discovery_sync("kubernetes", d))
            self._sources.append(kube)
            kube.start()

    async def stop(self) -> None:
        for src in self._sources:
            await src.stop()
        if self.health is not None:
            await self.health.stop()
        if self.loads is not None:
            await self.loads.stop()
        for t in list(self._tasks):
            t.cancel()
        for pool, _ in self._pools.values():
            pool.close()

    def _spawn(self, coro) -> None:
        t = self.gw.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- adding ---------------------------------------------------------------------

    def add(self, spec: dict, worker_id: str | None = None) -> Worker:
        """Registers a worker from a validated spec; returns it (PENDING).

        With ``--dp-aware`` and a ``dp_size`` in the spec, one logical worker per rank is
        registered and the rank-0 one returned.
        """
        cfg = self.gw.config
        dp_size = spec.get("dp_size")
        if cfg.dp_aware and dp_size and dp_size > 1 and spec.get("dp_rank") is None:
            first = None
            for rank in range(dp_size):
                w = self._new(dict(spec, dp_rank=rank), f"{worker_id}@{rank}" if worker_id else None)
                first = first or w
            return first
        return self._new(spec, worker_id)

    def _new(self, spec: dict, worker_id: str | None) -> Worker:
        cfg = self.gw.config
        url = spec["url"]
        rank = spec.get("dp_rank")
        models = tuple(c["id"] for c in spec.get("models") or ())
        w = Worker(url, models, worker_id, spec.get("worker_type", "regular"))
        w.base_url = url
        if rank is not None:
            w.url = f"{url}@{rank}"  # the logical worker of one DP rank (SMG's naming)
        w.model_cards = [dict(c, object="model") for c in spec.get("models") or ()]
        w.spec = {k: v for k, v in spec.items() if k != "api_key"}
        key = spec.get("api_key")
        w.api_key = key.encode() if key else None
        w.runtime = spec.get("runtime_type", "unspecified")
        w.dp_rank = rank
        w.dp_size = spec.get("dp_size")
        w.pool = self._pool_for(url)
        res = spec.get("resilience") or {}
        w.breaker = CircuitBreaker(
            res.get("cb_failure_threshold", cfg.cb_failure_threshold),
            res.get("cb_success_threshold", cfg.cb_success_threshold),
            res.get("cb_timeout_secs", cfg.cb_timeout_duration_secs),
            res.get("cb_window_secs", cfg.cb_window_duration_secs),
            enabled=not (cfg.disable_circuit_breaker or res.get("disable_circuit_breaker", False)),
            label=w.id, on_transition=self._on_breaker, now=self.gw.clock())
        self.registry.add(w)
        self.jobs[w.id] = "pending"
        self._spawn(self._register(w))
        return w

    def _pool_for(self, url: str) -> UpstreamPool:
        entry = self._pools.get(url)
        if entry is None:
            cfg = self.gw.config
            w = Worker(url)
            pool = UpstreamPool(self.gw.loop, w.host, w.port, idle_timeout=cfg.upstream_pool_idle_timeout_secs,
                                max_idle=cfg.upstream_pool_max_idle, connect_timeout=cfg.connect_timeout_secs)
            entry = self._pools[url] = [pool, 0]
        entry[1] += 1
        return entry[0]

    def _release_pool(self, url: str) -> None:
        entry = self._pools.get(url)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self._pools[url]

    def _auth(self, w: Worker) -> list | None:
        return [("authorization", "Bearer " + w.api_key.decode())] if w.api_key else None

    async def _register(self, w: Worker) -> None:
        delay = 0.1
        while self.registry.get(w.id) is w:
            try:
                if not w.models:
                    await self._discover_models(w)
                break
            except UpstreamError as e:
                try:
                    status, _, _ = await client.request(w.base_url, "GET", "/health", headers=self._auth(w),
                                                        timeout=5.0)
                except UpstreamError:
                    status = 0
                if 200 <= status < 300:
                    log.info("worker %s has no model list (%s): it serves any model", w.url, e)
                    break
                log.warning("worker %s not answering yet: %s", w.url, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REGISTRATION_MAX_BACKOFF)
        if self.registry.get(w.id) is not w:
            return
        cfg = self.gw.config
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
        status, _, body = await client.request(w.base_url, "GET", "/v1/models", headers=self._auth(w), timeout=5.0)
        if not 200 <= status < 300:
            raise UpstreamError(f"GET /v1/models answered {status}")
        import orjson

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
                                                   timeout=5.0)
            import orjson

            info = orjson.loads(body) if 200 <= status < 300 else {}
        except (UpstreamError, ValueError):
            info = {}
        size = info.get("dp_size") if isinstance(info, dict) else None
        if not isinstance(size, int) or size <= 1:
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
        from smg.workers.spec import SpecError, validate

        try:
            clean = validate({k: v for k, v in spec.items() if k != "source"})
        except SpecError as e:
            log.warning("%s discovery: bad worker %s: %s", source, spec.get("url"), e)
            self.gw.on_discovery(source, "registration", "invalid")
            return
        if self.registry.find_url(clean["url"]) is not None:
            return
        self.add(clean)
        self.gw.on_discovery(source, "registration", "success")

    def _undiscovered(self, url: str, source: str) -> None:
        url = url.rstrip("/")
        for w in self.registry.all():
            if w.base_url == url:
                self.remove(w.id)
        self.gw.on_discovery(source, "deregistration", "removed")

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
        settle = (w.spec.get("health") or {}).get("drain_settle_secs", self.gw.config.drain_settle_secs)
        if not drain or w.inflight == 0 or settle <= 0:
            self._finalize(w)
        else:
            self._spawn(self._drain(w, settle))
        return w

    async def _drain(self, w: Worker, settle: float) -> None:
        loop = self.gw.loop
        deadline = loop.time() + settle
        while w.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
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
        self.gw.on_health_check(w, ok)

    def _on_load(self, w: Worker, report: dict | None) -> None:
        w.engine = report

    def _on_breaker(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        w = self.registry.get(breaker.label)
        if w is not None:
            self.registry.set_breaker_open(w, new == OPEN)
            log.warning("worker %s circuit breaker %s -> %s", w.url, old, new)
        self.gw.on_breaker_transition(breaker.label, w.url if w else breaker.label, old, new)

    def record_outcome(self, w: Worker, ok: bool) -> None:
        if w.breaker is not None:
            w.breaker.record(ok, self.gw.clock())

    def sweep(self, now: float) -> None:
        """Lets open breakers whose timeout passed move to half-open (lazy in the core)."""
        for w in self.registry.all():
            if w.breaker_open:
                w.breaker.state_at(now)

    def info(self, w: Worker) -> dict:
        """WorkerInfo as the API shows it (never the api_key)."""
        now = self.gw.clock()
        spec = w.spec
        return {
            "id": w.id, "url": w.url, "model_id": w.models[0] if w.models else None, "models": list(w.models),
            "worker_type": w.worker_type, "connection_mode": spec.get("connection_mode", "http"),
            "runtime_type": w.runtime, "labels": spec.get("labels", {}), "priority": spec.get("priority", 50),
            "cost": spec.get("cost", 1.0), "bootstrap_port": spec.get("bootstrap_port"),
            "dp_rank": w.dp_rank, "dp_size": w.dp_size, "is_healthy": w.status == READY, "status": w.status,
            "load": w.inflight, "job_status": self.jobs.get(w.id, "completed"),
            "circuit_breaker": w.breaker.stats(now) if w.breaker is not None else None,
            "health": spec.get("health", {}), "resilience": spec.get("resilience", {}),
            "has_api_key": w.api_key is not None,
        }


__all__ = ["WorkerManager", "PENDING", "FAILED"]
