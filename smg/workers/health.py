"""Worker health: the status state machine (sans-I/O) and the prober that drives it.

Rule 1: every status transition a health probe can cause lives in ``TRANSITIONS``
below. ``HealthTracker`` only counts probe outcomes and looks rows up with the shared
guard engine (``smg.workers.guards``); it holds no transition logic of its own.
Rule 2: ``HealthTracker`` touches no socket, loop or clock. ``HealthChecker`` is the
I/O shell: it probes workers over HTTP, feeds outcomes to one tracker per worker and
reports status changes through callbacks; the gateway applies them to the registry
(``registry.set_status``), so the registry stays the one place membership changes.
Rule 3: probes go to ``worker.base_url`` (the network address), never ``worker.url``
(the logical key, ``base@rank`` for a data-parallel rank).
Rule 4: intervals, timeout, thresholds and endpoint come from the settings table
(``HealthChecker.from_config``); constructors restate no setting's default. A worker's
own ``path`` (its engine's probe endpoint, ``smg.workers.engines``), ``timeout`` and
``interval`` (WorkerSpec ``health``) override the checker's for that worker; a
worker's own ``check`` (``async check(worker, timeout) -> reason | None``: a gRPC
worker's ``HealthCheck`` RPC, smg/workers/grpc_registration.py) replaces the HTTP probe
for it, feeding the same state machine.
Rule 5: a failed probe is logged at WARNING with its reason (transport error, timeout,
the status answered), at most once per ``FAILURE_LOG_INTERVAL`` seconds per worker (the
count of the failures in between is in the next line); the first success after a
failure is logged at INFO.

Theory of operation. Statuses are SMG's (``smg/workers/worker.py``): ``pending``,
``ready``, ``not_ready``, ``failed``, ``draining``; only ``ready`` is routable. A
tracker keeps three counters, updated before each lookup:

- ``successes``: consecutive successful probes (a failure zeroes it),
- ``failures``: consecutive failed probes (a success zeroes it),
- ``probes``: probes seen since the tracker entered its current status.

A row maps ``(status, input)`` to guards ``(counter, limit, next_status)`` tried in
order; the first whose counter has reached its limit fires. An empty tuple means
"stay". Limits are named and resolved from the thresholds:

======================  ========================================================
``SUCCESS_LIMIT``       ``success_threshold`` (``--health-success-threshold``)
``FAILURE_LIMIT``       ``failure_threshold`` (``--health-failure-threshold``)
``PENDING_LIMIT``       ``10 x failure_threshold`` probes while pending
``NOT_READY_LIMIT``     ``3 x failure_threshold`` consecutive failures
======================  ========================================================

The rules (SMG 1.9 ``docs`` + smg#1102, smg#2468):

- pending -> ready after ``success_threshold`` consecutive successes; pending ->
  failed after ``10 x failure_threshold`` probes without getting there (a worker
  that never comes up must not stay "pending" forever).
- ready -> not_ready after ``failure_threshold`` consecutive failures.
- not_ready -> ready after ``success_threshold`` consecutive successes; not_ready ->
  failed when the failure streak (counted from the last success, so including the
  ``failure_threshold`` failures that made it not_ready) reaches ``3 x failure_threshold``.
- failed keeps being probed and rejoins (-> ready) after ``success_threshold``
  consecutive successes (smg#2468: before that fix failed workers never came back).
- A promotion to ready readmits the worker's open circuit breaker (half-open at once,
  ``CircuitBreaker.readmit``) rather than leaving it to the breaker's timeout.
- ``DRAIN`` moves any status to draining; draining is terminal: probes no longer
  change it (the worker is on its way out of the registry).

Counters are not reset by a transition, except ``probes``. An input the table has no
row for is a bug in this module and raises ``ValueError`` (the hypothesis tests walk
every row).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from smg.errors import UpstreamError
from smg.upstream import client
from smg.workers.background import Background
from smg.workers.guards import ALWAYS, check_total, next_state
from smg.workers.worker import DRAINING, FAILED, NOT_READY, PENDING, READY, Worker

log = logging.getLogger("smg.workers.health")

STATUSES = (PENDING, READY, NOT_READY, FAILED, DRAINING)

# Inputs.
PROBE_OK = "probe_ok"
PROBE_FAIL = "probe_fail"
DRAIN = "drain"
INPUTS = (PROBE_OK, PROBE_FAIL, DRAIN)

# Counters.
SUCCESSES = "successes"
FAILURES = "failures"
PROBES = "probes"

# Limits.
SUCCESS_LIMIT = "success"
FAILURE_LIMIT = "failure"
PENDING_LIMIT = "pending"
NOT_READY_LIMIT = "not_ready"

# SMG: Pending -> Failed after 10 x failure_threshold probes; NotReady -> Failed after
# 3 x failure_threshold. With the CLI defaults (3 failures, 60 s interval) that is
# 30 minutes for a worker that never became ready, 9 minutes for one that went away.
PENDING_PROBE_FACTOR = 10
NOT_READY_FAILURE_FACTOR = 3

TRANSITIONS: dict = {
    (PENDING, PROBE_OK): ((SUCCESSES, SUCCESS_LIMIT, READY), (PROBES, PENDING_LIMIT, FAILED)),
    (PENDING, PROBE_FAIL): ((PROBES, PENDING_LIMIT, FAILED),),
    (PENDING, DRAIN): ((ALWAYS, None, DRAINING),),
    (READY, PROBE_OK): (),
    (READY, PROBE_FAIL): ((FAILURES, FAILURE_LIMIT, NOT_READY),),
    (READY, DRAIN): ((ALWAYS, None, DRAINING),),
    (NOT_READY, PROBE_OK): ((SUCCESSES, SUCCESS_LIMIT, READY),),
    (NOT_READY, PROBE_FAIL): ((FAILURES, NOT_READY_LIMIT, FAILED),),
    (NOT_READY, DRAIN): ((ALWAYS, None, DRAINING),),
    (FAILED, PROBE_OK): ((SUCCESSES, SUCCESS_LIMIT, READY),),
    (FAILED, PROBE_FAIL): (),
    (FAILED, DRAIN): ((ALWAYS, None, DRAINING),),
    (DRAINING, PROBE_OK): (),
    (DRAINING, PROBE_FAIL): (),
    (DRAINING, DRAIN): (),
}
check_total(TRANSITIONS, STATUSES, INPUTS, "health")


class HealthTracker:
    """The health status of one worker, driven by probe outcomes.

    Pure: no I/O, no clock. ``status`` is one of ``STATUSES``.
    """

    __slots__ = ("success_threshold", "failure_threshold", "status", "successes", "failures",
                 "probes", "_limits")

    def __init__(self, success_threshold: int, failure_threshold: int, initial: str = PENDING) -> None:
        if success_threshold < 1 or failure_threshold < 1:
            raise ValueError("health thresholds must be at least 1")
        if initial not in STATUSES:
            raise ValueError(f"unknown worker status {initial!r}")
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self._limits = {
            SUCCESS_LIMIT: success_threshold,
            FAILURE_LIMIT: failure_threshold,
            PENDING_LIMIT: PENDING_PROBE_FACTOR * failure_threshold,
            NOT_READY_LIMIT: NOT_READY_FAILURE_FACTOR * failure_threshold,
        }
        self.status = initial
        self.successes = 0
        self.failures = 0
        self.probes = 0

    def limit(self, name: str) -> int:
        return self._limits[name]

    def on_probe(self, ok: bool) -> str | None:
        """Counts one probe outcome.

        Returns:
            The new status if this probe changed it, else None.
        """
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        self.probes += 1
        return self._apply(PROBE_OK if ok else PROBE_FAIL)

    def drain(self) -> str | None:
        """Moves to draining (terminal). Returns DRAINING, or None if already there."""
        return self._apply(DRAIN)

    def reset(self, status: str = PENDING) -> None:
        """Forces ``status`` and zeroes the counters (re-registration, admin override)."""
        if status not in STATUSES:
            raise ValueError(f"unknown worker status {status!r}")
        self.status = status
        self.successes = self.failures = self.probes = 0

    def _apply(self, event: str) -> str | None:
        target = next_state(TRANSITIONS, self.status, event, self, self._limits, "health")
        if target is None or target == self.status:
            return None
        self.status = target
        self.probes = 0
        return target

    def __repr__(self) -> str:
        return (f"HealthTracker({self.status}, successes={self.successes}, failures={self.failures}, "
                f"probes={self.probes})")


# -- the prober (I/O shell)

# Probes run concurrently, but at most this many at once: with thousands of workers an
# unbounded fan-out opens thousands of sockets in the same millisecond every interval
# (smg#1694: probe latency at fleet scale).
DEFAULT_PROBE_CONCURRENCY = 64
# Each worker's next probe is moved by up to +-10% of its interval, so a fleet's probes
# spread out instead of arriving together.
PROBE_JITTER = 0.1


# A worker's failing probes are logged at most once per this many seconds (rule 5): one
# line a minute says it is down and why, without a line per probe of a fleet.
FAILURE_LOG_INTERVAL = 60.0


class _Entry:
    __slots__ = ("worker", "tracker", "api_key", "interval", "due", "path", "timeout", "logged_at",
                 "unlogged", "failing", "check")

    def __init__(self, worker: Worker, tracker: HealthTracker, api_key: str | None,
                 interval: float | None, due: float, path: str | None = None,
                 timeout: float | None = None, check=None) -> None:
        self.worker = worker
        self.tracker = tracker
        self.api_key = api_key
        self.interval = interval
        self.due = due
        self.path = path          # this worker's probe path; None: the checker's endpoint
        self.timeout = timeout    # this worker's probe timeout; None: the checker's
        self.logged_at = None     # clock of the last failure logged
        self.unlogged = 0         # failures since then, not logged
        self.failing = False
        self.check = check        # this worker's own probe (gRPC HealthCheck); None: HTTP


class HealthChecker(Background):
    """Probes workers every ``interval`` seconds (with jitter) and reports status changes.

    Each worker has its own due time: it is probed as soon as it is added, then every
    ``interval`` x (1 +- ``jitter``) seconds (``startup_interval`` while it is still
    pending), so probes of a large fleet spread out instead of arriving together.

    Callbacks (plain functions, called on the loop; they must not block):
    - ``on_status(worker, status)``: after every status change the probes cause.
    - ``on_failed(worker)``: with ``remove_unhealthy``, when a worker reaches failed
      (after ``on_status``); the worker is no longer probed afterwards.
    - ``on_result(worker, ok)``: after every probe (metrics:
      ``smg_worker_health_checks_total``).

    ``probe`` replaces the HTTP probe (``async probe(worker, api_key) -> bool``);
    ``clock``, ``sleep`` and ``rng`` (a ``random.Random``) are injectable for tests.
    ``tls`` (``smg.upstream.tls.WorkerTLS``) gives the client context of https workers.
    """

    def __init__(self, on_status: Callable[[Worker, str], None], *, endpoint: str, interval: float,
                 timeout: float, success_threshold: int, failure_threshold: int,
                 startup_interval: float | None, remove_unhealthy: bool,
                 api_key: str | None = None, jitter: float = PROBE_JITTER,
                 on_failed: Callable[[Worker], None] | None = None,
                 on_result: Callable[[Worker, bool], None] | None = None,
                 probe: Callable[[Worker, str | None], Awaitable[bool]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep,
                 rng: random.Random | None = None,
                 concurrency: int = DEFAULT_PROBE_CONCURRENCY, tls=None) -> None:
        if interval <= 0:
            raise ValueError("health check interval must be positive")
        self.tls = tls
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.on_status = on_status
        self.endpoint = endpoint if endpoint.startswith("/") else "/" + endpoint
        self.interval = interval
        self.startup_interval = startup_interval
        self.timeout = timeout
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self.api_key = api_key
        self.jitter = jitter
        self.remove_unhealthy = remove_unhealthy
        self.on_failed = on_failed
        self.on_result = on_result
        self._probe = probe or self.http_probe
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._entries: dict = {}  # worker id -> _Entry
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @classmethod
    def from_config(cls, config, on_status: Callable[[Worker, str], None], **kw) -> HealthChecker:
        """A checker with the ``health_*`` settings of ``config``; ``kw`` are the other
        constructor arguments (callbacks, injected probe/clock/sleep/rng) and may also
        override a setting for one checker (tests)."""
        values = dict(endpoint=config.health_check_endpoint, interval=config.health_check_interval_secs,
                      timeout=config.health_check_timeout_secs,
                      success_threshold=config.health_success_threshold,
                      failure_threshold=config.health_failure_threshold,
                      startup_interval=config.worker_startup_check_interval,
                      remove_unhealthy=config.remove_unhealthy_workers)
        values.update(kw)
        return cls(on_status, **values)

    # -- membership

    def add(self, worker: Worker, *, api_key: str | None = None, success_threshold: int | None = None,
            failure_threshold: int | None = None, interval: float | None = None,
            initial: str | None = None, path: str | None = None,
            timeout: float | None = None, check=None) -> HealthTracker:
        """Starts probing ``worker`` (first probe as soon as the loop runs).

        ``initial`` defaults to the worker's current status (pending for a new one).
        Per-worker values override the checker's (WorkerSpec ``health``; ``path``: the
        engine's probe endpoint; ``check``: the worker's own probe, module rule 4).
        """
        status = initial or worker.status
        if status not in STATUSES:
            status = PENDING
        tracker = HealthTracker(success_threshold or self.success_threshold,
                                failure_threshold or self.failure_threshold, status)
        if path is not None and not path.startswith("/"):
            path = "/" + path
        self._entries[worker.id] = _Entry(worker, tracker, api_key, interval, self._clock(), path,
                                          timeout or None, check)
        if self._wake is not None:
            self._wake.set()
        return tracker

    def remove(self, worker: Worker) -> None:
        self._entries.pop(worker.id, None)

    def drain(self, worker: Worker) -> None:
        """Marks ``worker`` draining (reported through ``on_status``) and stops probing it."""
        e = self._entries.pop(worker.id, None)
        if e is not None and e.tracker.drain() is not None:
            self.on_status(worker, DRAINING)

    def tracker(self, worker: Worker) -> HealthTracker | None:
        e = self._entries.get(worker.id)
        return e.tracker if e is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    # -- probing

    async def http_probe(self, worker: Worker, api_key: str | None, path: str | None = None,
                         timeout: float | None = None) -> bool:
        """``GET {base_url}{path}``; True on 2xx. Transport errors and timeouts are False."""
        return await self.http_check(worker, api_key, path, timeout) is None

    async def http_check(self, worker: Worker, api_key: str | None, path: str | None = None,
                         timeout: float | None = None) -> str | None:
        """``GET {base_url}{path or endpoint}``: None on 2xx, else why it failed."""
        headers = [("authorization", f"Bearer {api_key}")] if api_key else None
        path = path or self.endpoint
        try:
            status, _, _ = await client.request(worker.base_url, "GET", path, headers=headers,
                                                timeout=timeout or self.timeout,
                                                ssl=self.tls.for_url(worker.base_url) if self.tls else None)
        except UpstreamError as e:
            return f"GET {path}: {e}"
        return None if 200 <= status < 300 else f"GET {path} answered {status}"

    async def _probe_one(self, e: _Entry) -> bool:
        key = e.api_key or self.api_key
        async with self._sem:
            try:
                if e.check is not None:
                    reason = await e.check(e.worker, e.timeout or self.timeout)
                elif self._probe == self.http_probe:
                    reason = await self.http_check(e.worker, key, e.path, e.timeout)
                else:
                    reason = None if await self._probe(e.worker, key) else "probe failed"
            except (UpstreamError, OSError, asyncio.TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
        self._log_outcome(e, reason)
        return reason is None

    def _log_outcome(self, e: _Entry, reason: str | None) -> None:
        """Rule 5: failures at WARNING, rate-limited per worker; recovery at INFO."""
        w = e.worker
        if reason is None:
            if e.failing:
                log.info("health probe %s succeeds again (%d failure(s) not logged)", w.url, e.unlogged)
            e.failing, e.unlogged, e.logged_at = False, 0, None
            return
        e.failing = True
        now = self._clock()
        if e.logged_at is not None and now - e.logged_at < FAILURE_LOG_INTERVAL:
            e.unlogged += 1
            return
        extra = f" ({e.unlogged} more failure(s) since the last line)" if e.unlogged else ""
        log.warning("health probe %s failed: %s%s", w.url, reason, extra)
        e.logged_at, e.unlogged = now, 0

    def _next_due(self, e: _Entry, now: float) -> float:
        base = e.interval or self.interval
        if e.tracker.status == PENDING and self.startup_interval:
            base = min(base, self.startup_interval)
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)
        return now + base

    def apply(self, worker: Worker, ok: bool) -> str | None:
        """Feeds one probe outcome for ``worker`` and fires the callbacks.

        Returns the new status, or None (no change, or the worker is not tracked).
        """
        e = self._entries.get(worker.id)
        if e is None:
            return None
        if self.on_result is not None:
            self.on_result(worker, ok)
        new = e.tracker.on_probe(ok)
        if new is not None:
            log.info("worker %s (%s) health: -> %s", worker.id, worker.url, new)
            if new == READY and worker.breaker is not None:
                worker.breaker.readmit(self._clock())  # health returned: an open breaker goes half-open
            self.on_status(worker, new)
            if new == FAILED and self.remove_unhealthy:
                self._entries.pop(worker.id, None)
                if self.on_failed is not None:
                    self.on_failed(worker)
        return new

    async def check_once(self, force: bool = False) -> int:
        """Probes every worker that is due (every worker with ``force``).

        Returns:
            The number of workers probed.
        """
        now = self._clock()
        due = [e for e in self._entries.values() if force or e.due <= now]
        if not due:
            return 0
        results = await asyncio.gather(*(self._probe_one(e) for e in due))
        now = self._clock()
        for e, ok in zip(due, results):
            if self._entries.get(e.worker.id) is not e:
                continue  # removed (or re-added) while the probe was in flight
            self.apply(e.worker, ok)
            e.due = self._next_due(e, now)
        return len(due)

    def next_wakeup(self) -> float:
        """Seconds until the earliest due probe (``interval`` when nothing is tracked)."""
        if not self._entries:
            return self.interval
        return max(0.0, min(e.due for e in self._entries.values()) - self._clock())

    async def run(self, rounds: int | None = None) -> None:
        """Probes until cancelled (or for ``rounds`` wake-ups, for tests)."""
        self._wake = asyncio.Event()
        n = 0
        try:
            while rounds is None or n < rounds:
                n += 1
                await self.check_once()
                delay = self.next_wakeup()
                if delay <= 0:
                    continue
                self._wake.clear()
                sleeper = asyncio.ensure_future(self._sleep(delay))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
        finally:
            self._wake = None
