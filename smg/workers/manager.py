"""WorkerManager: the lifecycle of workers, from a spec to removal.

Theory of operation: ``add(spec)`` creates the Worker (PENDING) with its circuit
breaker, its retry policy (when its spec's ``resilience`` section has retry fields)
and a pool shared by every logical worker of the same server, registers it, and
starts its registration job: identify its engine and learn its models
(``smg.workers.engines.identify``: ``GET /v1/models`` and each engine's marker paths;
a known engine without a model list serves any model; a server that answers but is
neither a known engine nor lists models is refused; one not answering yet is asked
again with backoff), record the engine as ``runtime_type``, expand data-parallel ranks
when ``--dp-aware``, then hand it to the health checker with its engine's probe path,
whose probes move it to READY (the successful discovery counts as the first good
probe), and to the load monitor when its engine reports load (never with
``--policy passthrough``, which reads no load). ``remove`` drains:
DRAINING at once (no new traffic), removal when its in-flight requests are done or
the settle time has passed.

A gRPC worker (``connection_mode`` "grpc") registers through
smg/workers/grpc_registration.py instead: its channel (one per base address), its
runtime from the engine's services, its model and card from ``GetModelInfo``/
``GetServerInfo``, then its model's tokenizer (from the gateway's ``tokenizers``, else
fetched with ``GetTokenizer``); only then is it handed to the health checker (probed
with ``HealthCheck``) and the load monitor (``GetLoads``), so it never becomes READY
without a tokenizer. A tokenizer that cannot be had leaves it PENDING, the reason in
its job status and a warning in the log, and is asked for again with backoff. Removal
releases its channel (closed with the base address's last worker); ``stop`` closes all.

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
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable

import orjson

from smg.errors import UpstreamError
from smg.upstream import client
from smg.upstream.pool import UpstreamPool
from smg.upstream.tls import WorkerTLS
from smg.workers import engines
from smg.workers.addresses import AddressGuard
from smg.workers.breaker import OPEN, CircuitBreaker
from smg.workers.discovery import FileDiscovery, KubeConfig, KubeDiscovery
from smg.workers.events import BreakerTransition, DiscoveryChanged, DiscoverySynced, HealthChecked, LoadPolled
from smg.workers.grpc_registration import GrpcWorkers, Waiting
from smg.workers.health import HealthChecker
from smg.workers.loads import INT_FIELDS, LoadMonitor
from smg.workers.registry import WorkerRegistry
from smg.workers import grpc_registration, server_info
from smg.workers.retry import RetryPolicy
from smg.workers.spec import DEFAULT_COST, DEFAULT_PRIORITY, SPEC_FIELDS, SpecError, validate
from smg.workers.worker import DRAINING, FAILED, PENDING, READY, Worker

log = logging.getLogger("smg.workers")

# First wait before retrying a worker that is not answering yet; it doubles up to
# --worker-registration-max-backoff-secs.
REGISTRATION_FIRST_BACKOFF = 0.1
# How often a draining worker's in-flight count is looked at.
DRAIN_POLL = 0.05

# The control-plane jobs a worker can have running (the ``job_type`` of its job status).
ADD_JOB = "AddWorker"
UPDATE_JOB = "UpdateWorker"
REMOVE_JOB = "RemoveWorker"


def new_worker_id() -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then random bits, so ids
    sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return str(uuid.UUID(int=value))


class WorkerManager:
    def __init__(self, config, registry: WorkerRegistry, events, clock: Callable[[], float] = time.monotonic,
                 tls: WorkerTLS | None = None, tokenizers=None) -> None:
        self.config = config
        # gRPC workers' channels and registration; ``tokenizers``: the gateway's
        # TokenizerRegistry, which their models' tokenizers are registered in
        self.grpc = GrpcWorkers(config, tokenizers)
        self.tls = tls if tls is not None else WorkerTLS.from_config(config)
        self.registry = registry
        self.events = events
        self.clock = clock
        self.guard = AddressGuard.from_config(config)  # refuses metadata-service worker addresses
        self.loop: asyncio.AbstractEventLoop | None = None
        self.retry = RetryPolicy.from_config(config)  # the gateway's policy, base of per-worker ones
        self.jobs: dict = {}      # worker id -> its running job (job status record); none when idle
        self._pools: dict = {}    # base url -> [pool, users]
        self._tasks: set = set()
        self._sources: list = []
        self.health = None if config.disable_health_check else HealthChecker.from_config(
            config, self._on_status, on_failed=self._on_failed, on_result=self._on_probe, clock=clock, tls=self.tls)
        # passthrough routes to the first candidate whatever the loads: nothing reads them
        self.loads = None if config.disable_load_monitoring or config.policy == "passthrough" else \
            LoadMonitor.from_config(config, self._on_load, tls=self.tls, on_poll=self._on_poll)
        self._probe_paths: dict = {}  # worker id -> the path its probes use (its engine's)
        self._engines: dict = {}      # worker id -> its engine (smg.workers.engines.Engine)
        self._described: dict = {}    # worker id -> what its engine said (smg.workers.server_info)

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
        await self.grpc.close_all()

    def _spawn(self, coro) -> None:
        t = self._loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- adding ---------------------------------------------------------------------

    def add(self, spec: dict, worker_id: str | None = None, job_type: str = ADD_JOB) -> Worker:
        """Registers a worker from a validated spec; returns it (PENDING). Call on the loop.

        With ``--dp-aware`` and a ``dp_size`` in the spec, one logical worker per rank is
        registered and the rank-0 one returned.
        """
        dp_size = spec.get("dp_size")
        if self.config.dp_aware and dp_size and dp_size > 1 and spec.get("dp_rank") is None:
            first = None
            for rank in range(dp_size):
                w = self._new(dict(spec, dp_rank=rank), worker_id if rank == 0 else None, job_type)
                first = first or w
            return first
        return self._new(spec, worker_id, job_type)

    def _new(self, spec: dict, worker_id: str | None, job_type: str = ADD_JOB) -> Worker:
        models = tuple(c["id"] for c in spec.get("models") or ())
        w = Worker(spec["url"], models, worker_id or new_worker_id(), spec.get("worker_type", "regular"),
                   dp_rank=spec.get("dp_rank"), connection_mode=spec.get("connection_mode"))
        w.model_cards = [dict(c, object="model") for c in spec.get("models") or ()]
        w.spec = {k: v for k, v in spec.items() if k != "api_key"}
        w.set_parse_output(self.config.http_parse_output)
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
        self._job(w, job_type)
        self._spawn(self._register(w))
        return w

    def _job(self, w: Worker, job_type: str, status: str = "processing", message: str | None = None) -> None:
        self.jobs[w.id] = {"job_type": job_type, "worker_url": w.url, "status": status, "message": message,
                           "timestamp": int(time.time())}

    def reconfigure(self, config) -> RetryPolicy:
        """New settings from a configuration reload (smg/server/reload.py says which may
        differ): the gateway's retry policy and each worker's (its spec's ``resilience``
        over it), each breaker's thresholds, timeout and window (state kept), the health
        probe interval (from each worker's next probe). Returns the new retry policy."""
        self.config = config
        self.retry = RetryPolicy.from_config(config)
        for w in self.registry.all():
            res = w.spec.get("resilience") or {}
            try:
                w.retry = self.retry.for_worker(res)
            except ValueError as e:  # its own fields no longer make a policy over the new base
                log.warning("worker %s keeps its retry policy: %s", w.url, e)
            if w.breaker is not None:
                w.breaker.retune(CircuitBreaker.from_config(config, res))
        if self.health is not None:
            self.health.interval = config.health_check_interval_secs
        return self.retry

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
        if w.connection_mode == "grpc":
            await self._register_grpc(w)
            return
        cfg = self.config
        timeout = cfg.worker_probe_timeout_secs
        cap = cfg.worker_registration_max_backoff_secs
        delay = min(REGISTRATION_FIRST_BACKOFF, cap)
        ssl = self.tls.for_url(w.base_url)
        auth = self._auth(w)

        async def fetch(path: str) -> tuple:
            return await client.request(w.base_url, "GET", path, headers=auth, timeout=timeout, ssl=ssl)

        hint = None if w.runtime == "unspecified" else w.runtime
        unprobed = self.health is None or (w.spec.get("health") or {}).get("disable_health_check")
        if w.models and unprobed:
            # models given and no probe to choose: ready at once, the engine left unasked
            ident = engines.Identity(engines.BY_RUNTIME.get(hint), None, None)
        while self.registry.get(w.id) is w and not (w.models and unprobed):
            try:
                ident = await engines.identify(fetch, hint, spec_models=bool(w.models))
            except UpstreamError as e:
                log.warning("worker %s not answering yet: %s", w.url, e)
            else:
                if ident.refusal is not None:
                    log.error("worker %s not registered: %s", w.url, ident.refusal)
                    self._finalize(w)
                    return
                if ident.waiting is None:
                    break
                log.warning("worker %s answers but is not ready yet: %s", w.url, ident.waiting)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
        if self.registry.get(w.id) is not w:
            return
        engine = ident.engine
        if engine is not None and (hint is None or hint in engines.BY_RUNTIME):
            w.runtime = engine.runtime  # a runtime the table does not know stays as named
            self._engines[w.id] = engine
        self._probe_paths[w.id] = engines.choose_probe(cfg.health_check_endpoint, ident.health_path)
        name = engine.name if engine is not None else "engine not asked"
        if not w.models:
            if ident.cards is not None:
                self.registry.set_models(w, tuple(c["id"] for c in ident.cards), ident.cards)
            else:
                log.info("worker %s (%s) has no model list: it serves any model", w.url, name)
        if ident.health_path is not None:  # the engine answered: what it says about itself
            desc = await server_info.describe(fetch, w.runtime, ident.cards)
            if self.registry.get(w.id) is not w:
                return
            self._described[w.id] = desc
            w.spec["labels"] = {**desc.labels, **(w.spec.get("labels") or {})}  # the spec's win
        if cfg.dp_aware and w.dp_rank is None and await self._expand_dp(w):
            return
        self.jobs.pop(w.id, None)  # done: no job to report
        self._watch(w)
        if not unprobed:
            self.health.apply(w, True)  # the answered discovery is the first good probe
        log.info("worker %s registered (%s), %s, models %s, probed at %s", w.url, w.id, name,
                 list(w.models) or "any", self._probe_paths[w.id])

    def _job_message(self, w: Worker, message: str, status: str = "processing") -> None:
        job = self.jobs.get(w.id)
        self._job(w, job["job_type"] if job else ADD_JOB, status, message)

    async def _register_grpc(self, w: Worker) -> None:
        """The gRPC branch of ``_register`` (the module's theory of operation)."""
        cfg = self.config
        cap = cfg.worker_registration_max_backoff_secs
        delay = min(REGISTRATION_FIRST_BACKOFF, cap)
        hint = None if w.runtime == "unspecified" else w.runtime
        while True:
            found = await self.grpc.identify(w, hint)
            if self.registry.get(w.id) is not w:
                if not isinstance(found, Waiting):
                    await self.grpc.discard(found)
                return
            if not isinstance(found, Waiting):
                break
            if found.permanent:
                log.error("worker %s not registered: %s", w.url, found.reason)
                self._finalize(w)
                return
            log.warning("worker %s not answering yet: %s", w.url, found.reason)
            self._job_message(w, found.reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
        model_id, card, desc = grpc_registration.describe(found.runtime, found.model_info, found.server_info)
        if not w.models and model_id is None:
            await self.grpc.discard(found)
            log.error("worker %s not registered: its engine names no model (GetModelInfo has neither "
                      "served_model_name nor model_path)", w.url)
            self._finalize(w)
            return
        self.grpc.attach(w, found)
        if not w.models:
            self.registry.set_models(w, (model_id,), [card])
        self._described[w.id] = desc
        w.spec["labels"] = {**desc.labels, **(w.spec.get("labels") or {})}  # the spec's win
        if cfg.dp_aware and w.dp_rank is None and self._split_dp(w, grpc_registration.dp_size(found.server_info)):
            return
        delay, last = min(REGISTRATION_FIRST_BACKOFF, cap), None
        while True:
            reason = await self.grpc.ensure_tokenizers(w)
            if self.registry.get(w.id) is not w:
                return
            if reason is None:
                break
            if reason != last:  # once per distinct reason: the retries would repeat it every few seconds
                log.warning("worker %s not ready: %s (asked again with backoff)", w.url, reason)
                last = reason
            self._job_message(w, reason, "failed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
        self.jobs.pop(w.id, None)
        self._watch(w)
        if self.health is not None and not (w.spec.get("health") or {}).get("disable_health_check"):
            self.health.apply(w, True)  # the engine answered HealthCheck: the first good probe
        log.info("worker %s registered (%s), gRPC %s engine, models %s", w.url, w.id, w.runtime, list(w.models))

    def _watch(self, w: Worker) -> None:
        """Puts ``w`` under the health checker (or READY without one) and, when its engine
        reports load, under the load monitor; with its current key and health settings."""
        key = w.api_key.decode() if w.api_key else None
        hc = w.spec.get("health") or {}
        if self.health is None or hc.get("disable_health_check"):
            self.registry.set_status(w, READY)
        else:
            self.health.add(w, api_key=key, success_threshold=hc.get("success_threshold"),
                            failure_threshold=hc.get("failure_threshold"), interval=hc.get("check_interval_secs"),
                            timeout=hc.get("timeout_secs"), path=self._probe_paths.get(w.id),
                            check=self.grpc.health_check(w) if w.channel is not None else None)
        engine = self._engines.get(w.id)
        named = w.spec.get("runtime_type", "unspecified") != "unspecified"
        if self.loads is not None and w.channel is not None:
            self.loads.add(w, w.runtime, key, fetch=self.grpc.loads_fetch(w))
        elif self.loads is not None and (engine is None or engine.loads or named):
            self.loads.add(w, None if w.runtime == "unspecified" else w.runtime, key)

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
        return self._split_dp(w, info.get("dp_size") if isinstance(info, dict) else None)

    def _split_dp(self, w: Worker, size) -> bool:
        """With a dp_size above one, replaces ``w`` by one logical worker per rank (an
        HTTP worker's calls carry its rank in the body, a gRPC worker's in
        ``data_parallel_rank``). Returns True if it did."""
        if not isinstance(size, int) or isinstance(size, bool) or size <= 1:
            return False
        spec = dict(w.spec, dp_size=size, models=w.model_cards or w.spec.get("models") or [])
        if w.api_key:
            spec["api_key"] = w.api_key.decode()
        self._finalize(w)
        for rank in range(size):  # rank 0 keeps the id the API answered
            self._new(dict(spec, dp_rank=rank), w.id if rank == 0 else None)
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
            # a source reports what it knows (pod, kv_connector ...); only the fields this
            # gateway acts on become the spec
            clean = validate({k: v for k, v in spec.items() if k in SPEC_FIELDS})
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
        if drain and w.status == DRAINING:
            return w  # its drain is already under way
        if self.health is not None:
            self.health.remove(w)
        if self.loads is not None:
            self.loads.remove(w)
        self.registry.set_status(w, DRAINING)
        self._job(w, REMOVE_JOB)
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
        if self.registry.get(w.id) is w:
            self._probe_paths.pop(w.id, None)
            self._engines.pop(w.id, None)
            self._described.pop(w.id, None)
        if self.registry.remove(w.id) is not None:
            self._release_pool(w.base_url)
            self.grpc.release(w)  # a gRPC worker's channel: closed with the address's last worker
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

    def _on_poll(self, w: Worker) -> None:
        self.events.emit(LoadPolled(w.id, w.url, "poll"))

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
        """WorkerInfo as the API shows it (never the api_key). SMG's keys first, in its
        order, empty ones left out as it does (``model_id``/``models`` while the models
        are unknown, ``labels``, ``engine_load``, ``job_status`` when there is none);
        then this gateway's extras (``dp_rank``, ``dp_size``, ``bootstrap_port`` when set,
        ``circuit_breaker``, ``health``, ``resilience``, ``has_api_key``)."""
        spec = w.spec
        doc: dict = {"id": w.id}
        if w.models:
            doc["model_id"] = w.models[0]
        doc["url"] = w.url
        if w.model_cards:
            desc = self._described.get(w.id)
            doc["models"] = [server_info.api_card(c, desc) for c in w.model_cards]
        doc.update(worker_type=w.worker_type, connection_mode=spec.get("connection_mode", "http"),
                   runtime_type=w.runtime)
        if spec.get("labels"):
            doc["labels"] = spec["labels"]
        doc.update(priority=spec.get("priority", DEFAULT_PRIORITY), cost=spec.get("cost", DEFAULT_COST),
                   is_healthy=w.status == READY, status=w.status, load=w.inflight, http2=False)
        report = w.engine
        if report:
            stamp = report.get("timestamp")
            if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
                stamp = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).isoformat()
            doc["engine_load"] = {"timestamp": stamp if isinstance(stamp, str) else "",
                                  "version": str(report.get("version") or ""),
                                  "dp_rank_count": report.get("dp_rank_count", 1),
                                  "loads": [_snapshot(r) for r in report.get("loads", [])]}
        job = self.jobs.get(w.id)
        if job is not None:
            doc["job_status"] = dict(job)
        for k, v in (("dp_rank", w.dp_rank), ("dp_size", w.dp_size), ("bootstrap_port", spec.get("bootstrap_port"))):
            if v is not None:
                doc[k] = v
        if w.breaker is not None:
            doc["circuit_breaker"] = w.breaker.stats(self.clock())
        doc.update(health=spec.get("health", {}), resilience=spec.get("resilience", {}),
                   has_api_key=w.api_key is not None)
        return doc

    # -- changing ---------------------------------------------------------------------

    def update(self, w: Worker, patch: dict) -> None:
        """PATCH: applies a validated partial spec (``priority``, ``cost``, ``labels``
        merged into the worker's, ``api_key`` rotated, ``health`` merged into its
        section) to ``w`` and to every checker that uses it, now."""
        spec = w.spec
        for k in ("priority", "cost"):
            if k in patch:
                spec[k] = patch[k]
        if "labels" in patch:
            spec["labels"] = {**(spec.get("labels") or {}), **patch["labels"]}
            w.set_parse_output(self.config.http_parse_output)
        if "api_key" in patch:
            w.api_key = patch["api_key"].encode()
        if "health" in patch:
            spec["health"] = {**(spec.get("health") or {}), **patch["health"]}
        if "api_key" in patch or "health" in patch:
            self._rewatch(w)

    def replace(self, w: Worker, spec: dict) -> Worker:
        """PUT: ``w`` is registered again from ``spec`` under the same id (an
        ``UpdateWorker`` job). Its connection pool is kept across the swap, so requests
        in flight on the old record finish."""
        entry = self._pools.get(w.base_url)
        if entry is not None:
            entry[1] += 1  # held: the old record's release must not close it
        try:
            self.remove(w.id, drain=False)
            return self.add(spec, worker_id=w.id, job_type=UPDATE_JOB)
        finally:
            if entry is not None:
                self._release_pool(w.base_url)

    def _rewatch(self, w: Worker) -> None:
        """Puts a registered worker under the health checker and load monitor again with
        its current key and health settings (a pending or draining one is left alone)."""
        if w.status in (PENDING, DRAINING) or self.registry.get(w.id) is not w:
            return
        if self.health is not None:
            self.health.remove(w)
        if self.loads is not None:
            self.loads.remove(w)
        self._watch(w)


__all__ = ["WorkerManager", "PENDING", "FAILED"]


# A rank's load as the Workers API shows it: every field of SMG's scheduler load
# snapshot, 0 for those the engine did not report (vLLM's /metrics has no token counts).
_SNAPSHOT_FIELDS = ("num_running_reqs", "num_waiting_reqs", "num_total_reqs", "num_used_tokens",
                    "max_total_num_tokens", "token_usage", "gen_throughput", "cache_hit_rate", "utilization",
                    "max_running_requests", "num_waiting_uncached_tokens")


def _snapshot(rank: dict) -> dict:
    out = dict(rank)
    for f in _SNAPSHOT_FIELDS:
        if f not in out:
            out[f] = 0 if f in INT_FIELDS else 0.0
    return out
