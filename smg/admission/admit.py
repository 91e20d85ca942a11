"""The admission stage of the request pipeline: the legacy concurrency limiter or the
priority scheduler, as a filter (smg/server/filters.py) over its sans-I/O core
(smg/admission/limiter.py, smg/admission/scheduler.py).

Rules:
- One stage per gateway, on the inference routes, after auth, tenant resolution and the
  tenant rate limit, before validation (``Gateway._chain_for``). ``build`` returns None
  when admission is off (``--max-concurrent-requests 0`` without the scheduler): the
  stage is then absent from the chain and costs nothing.
- Admitted at once: the filter returns CONTINUE and adds one end hook that gives the
  slot back when the request ends, however it ends (``ctx.add_end_hook``: exactly once).
  The legacy fast path allocates nothing of its own: one token taken, one shared hook.
- Waiting: the filter queues the request in the core, adds its end hook, and returns a
  future. The stage resolves it itself: None when a slot is granted (the chain goes on),
  a Reply at the queue timeout. A client that leaves while queued cancels the future
  (``filters.Waiter``) and ends the request, whose hook takes it out of the queue; a
  request granted a slot that then ends before resuming gives the slot back the same way.
- Time is the gateway's coarse loop clock (``now()``: ``Site.now``). Each stage keeps
  at most one entry, itself, in the gateway's timer wheel, due at the core's
  ``next_wakeup`` (queue timeouts, refill, starvation): no timer or task per request.
- Refusals are answered in the API's own error format. Legacy: 429
  ``admission_queue_full`` (queue full, or no queue with ``--queue-size 0``) with ``Retry-After``, 408
  ``queue_timeout``; ``smg_http_rate_limit_total{result}`` counts allowed and rejected.
  Scheduler: 429 ``scheduler_queue_full`` (``Retry-After: 1``), 408
  ``scheduler_queue_timeout``; a preempted victim is answered by its exchange
  (``Exchange.preempt``) 503 ``scheduler_preempted`` with ``Retry-After: 1`` and
  ``X-SMG-Preempted: true``.
- A victim is reached through its connection's current producer (the sink's
  ``producer``): an exchange still ``preemptible`` (nothing sent to the client yet).
- The scheduler's capacity (SMG's 4 tiers) is recomputed from the registry at most once
  per ``CAPACITY_REFRESH_SECS``, lazily on admission and at scrape time, not per request.
- Divergence from SMG, deliberately: a scheduler YAML that cannot be used (unknown keys,
  bad values, reservations above the start-up capacity) stops the gateway with a
  ConfigError naming ``--priority-scheduler-config``, where SMG logs it and falls back to
  the legacy limiter; settings that cannot take effect in the chosen mode are logged.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import yaml

from smg.admission import limiter as L
from smg.admission import scheduler as S
from smg.admission.limiter import ConcurrencyLimiter
from smg.admission.scheduler import CLASS_NAMES, CLASSES, Entry, PriorityScheduler, fleet_capacity, parse_priority
from smg.admission.token_bucket import TokenBuckets
from smg.config.schema import setting
from smg.errors import ConfigError

log = logging.getLogger("smg.admission")

PRIORITY_HEADER = b"x-smg-priority"
CAPACITY_REFRESH_SECS = 1.0   # load reports arrive every --load-monitor-interval (10 s)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OTHER_TENANT = "other"
ANONYMOUS = "anonymous"

_RETRY_1 = [(b"retry-after", b"1")]
_PREEMPTED = [(b"retry-after", b"1"), (b"x-smg-preempted", b"true")]


def max_concurrent(config) -> int:
    """``--max-concurrent-requests`` resolved (SMG 1.13): -1 → 1024 × cores, at least
    4096; 0 → no limiter."""
    n = config.max_concurrent_requests
    if n < 0:
        return max(1024 * (os.cpu_count() or 1), 4096)
    return n


def build(config, *, registry, ready, reply, timers, now, metrics=None):
    """The admission stage for ``config`` (None: admission off). Handed over by the
    gateway (this layer imports neither): ``registry`` (``.all()`` workers with
    ``status`` and ``engine``), ``ready`` (the routable status value), ``reply`` (the
    filter chain's Reply class), ``timers`` (the timer wheel), ``now`` (its clock) and
    the Metrics (None: off).

    Raises:
        ConfigError: a setting the limiter or scheduler cannot use, naming its flag.
    """
    if config.priority_scheduler_enabled:
        _ignored(config, ("queue_size", "queue_timeout_secs"), "with --priority-scheduler-enabled (per-class "
                 "queue settings come from --priority-scheduler-config)")
        return PriorityAdmission.from_config(config, lambda: healthy_reports(registry.all(), ready), reply,
                                             timers, now, metrics)
    _ignored(config, ("priority_scheduler_config", "priority_scheduler_default_max_class",
                      "priority_scheduler_tenant_metric_top_n", "worker_capacity_override"),
             "without --priority-scheduler-enabled")
    cap = max_concurrent(config)
    if cap == 0:
        _ignored(config, ("queue_size", "queue_timeout_secs", "rate_limit_tokens_per_second"),
                 "with --max-concurrent-requests 0 (no limiter)")
        return None
    try:
        core = ConcurrencyLimiter(cap, config.rate_limit_tokens_per_second, config.queue_size,
                                  config.queue_timeout_secs)
    except ValueError as e:
        raise ConfigError("--max-concurrent-requests / --rate-limit-tokens-per-second", str(e)) from None
    return LegacyAdmission(core, reply, timers, now, metrics.add_rate_limit() if metrics is not None else None)


def _ignored(config, names: tuple, why: str) -> None:
    for name in names:
        if getattr(config, name) != setting(name).default:
            log.warning("--%s is ignored %s", name.replace("_", "-"), why)


def _cell(counter, key: tuple) -> list:
    return counter.cell(key) if counter is not None else [0]


def _arm(stage, when: float | None) -> None:
    """Keeps ``stage`` (its ``on_timeout``) in the timer wheel, once, due at ``when`` or
    earlier (the core's next wake-up; None: nothing to wait for)."""
    if when is None:
        return
    armed = stage._armed
    if armed is not None:
        if armed <= when:
            return
        stage.timers.remove(stage, stage._key)
    stage._armed = when
    stage._key = stage.timers.add(stage, when)


# -- the legacy limiter ---------------------------------------------------------------


class _Queued:
    """A request waiting in the legacy queue, and its end hook."""

    __slots__ = ("owner", "ticket", "fut")

    def __init__(self, owner) -> None:
        self.owner = owner
        self.ticket: Any = None   # the limiter's Ticket, once queued
        self.fut: Any = None

    def __call__(self, ctx) -> None:
        t = self.ticket
        if t.state is L.QUEUED:
            self.owner.core.cancel(t)
            self.owner.left += 1
        elif t.state is L.ADMITTED:
            self.owner._release(ctx)


class LegacyAdmission:
    """SMG's default admission: ``--max-concurrent-requests`` slots and one FIFO queue."""

    __slots__ = ("core", "reply", "timers", "now", "left", "_hook", "_allowed", "_rejected", "_armed", "_key")

    def __init__(self, core: ConcurrencyLimiter, reply, timers, now, rate_limit=None) -> None:
        self.core = core
        self.reply = reply
        self.timers = timers
        self.now = now
        self.left = 0               # requests whose client left while they were queued
        self._hook = self._release  # one bound method shared by every request admitted at once
        self._allowed = _cell(rate_limit, ("allowed",))
        self._rejected = _cell(rate_limit, ("rejected",))
        self._armed = None
        self._key = 0

    def __call__(self, conn, ctx):
        core = self.core
        # ConcurrencyLimiter.try_acquire inline (the hot path). Without refill the bucket
        # never looks at the clock, so the clock is not read either.
        if not core.queue and core.bucket.try_acquire(0, self.now() if core.refill else 0.0):
            self._allowed[0] += 1
            # ctx.add_end_hook, inline: admission runs before any other end hook is added
            if ctx.on_end is None:
                ctx.on_end = self._hook
            else:
                ctx.add_end_hook(self._hook)
            return None
        return self._wait(ctx, self.now())

    def _wait(self, ctx, now: float):
        core = self.core
        q = _Queued(self)
        t = core.enqueue(q, now)
        if t is None:
            self._rejected[0] += 1
            retry = [(b"retry-after", b"%d" % core.retry_after(now))]
            if core.queue_size == 0:
                return self.reply(429, "too many concurrent requests", "admission_queue_full", retry)
            return self.reply(429, "too many concurrent requests and the admission queue is full",
                              "admission_queue_full", retry)
        q.ticket = t
        q.fut = fut = asyncio.get_running_loop().create_future()
        ctx.add_end_hook(q)
        for g in core.poll(now):   # with refill, tokens may be free for the head already
            self._grant(g)
        _arm(self, core.next_wakeup(now))
        return fut

    def _release(self, ctx) -> None:
        core = self.core
        if not core.queue:
            core.bucket.release(0)  # ConcurrencyLimiter.release inline: nobody waits
            return
        for g in core.release(self.now()):
            self._grant(g)

    def _grant(self, t) -> None:
        self._allowed[0] += 1
        fut = t.item.fut
        if not fut.done():
            fut.set_result(None)

    def on_timeout(self) -> None:
        """The timer wheel: queue timeouts, and tokens refilled for the head."""
        self._armed = None
        core = self.core
        now = self.now()
        for t in core.expire(now):
            self._rejected[0] += 1
            fut = t.item.fut
            if not fut.done():
                fut.set_result(self.reply(408, "timed out waiting in the admission queue", "queue_timeout"))
        for g in core.poll(now):
            self._grant(g)
        _arm(self, core.next_wakeup(now))

    def idle(self) -> bool:
        """Nothing in flight or queued (every token back)."""
        core = self.core
        return core.queued == 0 and core.available(self.now()) >= core.capacity


# -- the priority scheduler -----------------------------------------------------------


class _Held(Entry):
    """A request in the scheduler: its queue entry, then its slot, and its end hook."""

    __slots__ = ("owner", "conn", "fut")

    def __init__(self, cls: int, owner, conn) -> None:
        self.cls = cls          # Entry's fields, set here (one call less per request)
        self.since = 0.0
        self.deadline = 0.0
        self.state = S.NEW
        self.owner = owner
        self.conn = conn
        self.fut: Any = None

    def __call__(self, ctx) -> None:
        self.owner._ended(self)


def _probe(e) -> bool | None:
    """Whether a victim's request can be preempted: its exchange has sent nothing (True),
    it has (False: never), or it is not in an exchange now (None)."""
    return getattr(getattr(e.conn, "producer", None), "preemptible", None)


class PriorityAdmission:
    """SMG's priority scheduler as the admission stage."""

    __slots__ = ("core", "reply", "timers", "now", "reports", "override", "fallback", "source", "tenants",
                 "default_max", "rps", "top_n", "_labels", "_refresh_at", "_can_preempt", "_m", "_admitted",
                 "_rl_rejected", "_armed", "_key")

    def __init__(self, core: PriorityScheduler, reply, timers, now, reports, override: int, fallback: int,
                 tenants: dict, default_max: int, rps=None, top_n: int = 32, metrics=None) -> None:
        """``reports()``: the reported ``max_running_requests`` (or None) of each healthy
        worker; ``rps``: a TokenBuckets(1, ...) requests/second check, or None;
        ``metrics``: the gateway's Metrics (its smg_scheduler_* families read ``gauges``)."""
        self.core = core
        self.reply = reply
        self.timers = timers
        self.now = now
        self.reports = reports
        self.override = override
        self.fallback = fallback
        self.source = S.SOURCE_FALLBACK
        self.tenants = tenants
        self.default_max = default_max
        self.rps = rps
        self.top_n = top_n
        self._labels: set = set()
        self._refresh_at = float("-inf")
        self._can_preempt = tuple(c.can_preempt for c in core.classes)
        families = self._m = metrics.add_scheduler(self, WAIT_BUCKETS) if metrics is not None else None
        admit = families["admit"] if families else None
        self._admitted = tuple(_cell(admit, (n, "admitted")) for n in CLASS_NAMES)
        self._rl_rejected = _cell(metrics.add_rate_limit() if metrics is not None and rps is not None else None,
                                  ("rejected",))
        self._armed = None
        self._key = 0

    @classmethod
    def from_config(cls, config, reports, reply, timers, now, metrics=None) -> "PriorityAdmission":
        flag = "--priority-scheduler-config"
        path = config.priority_scheduler_config
        doc = None
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    doc = yaml.safe_load(f)
            except OSError as e:
                raise ConfigError(flag, f"cannot read {path}: {e.strerror}") from None
            except yaml.YAMLError as e:
                raise ConfigError(flag, f"{path} is not valid YAML: {e}") from None
        try:
            classes, tenants = S.parse_config(doc)
        except ValueError as e:
            raise ConfigError(flag, f"{path}: {e}") from None
        fallback = max_concurrent(config) or 1024   # SMG's tracker default when the limiter is off
        override = config.worker_capacity_override
        start = override or fallback
        reserved = sum(S.wanted_reservations(classes, start))
        if reserved > start:
            raise ConfigError(flag, f"class reservations ({reserved} slots) exceed the capacity at start-up "
                                    f"({start}: --worker-capacity-override, else --max-concurrent-requests)")
        rps = None
        rate = config.rate_limit_tokens_per_second
        if rate > 0:
            try:
                rps = TokenBuckets(1, max(fallback, 1), rate)
            except ValueError as e:
                raise ConfigError("--rate-limit-tokens-per-second", str(e)) from None
        return cls(PriorityScheduler(classes, start), reply, timers, now, reports, override,
                   fallback, tenants, S.BY_NAME[config.priority_scheduler_default_max_class], rps,
                   config.priority_scheduler_tenant_metric_top_n, metrics)

    # -- the filter --------------------------------------------------------------------

    def __call__(self, conn, ctx):
        now = self.now()
        if now >= self._refresh_at:
            self.refresh(now)
        raw = None
        for n, v in ctx.headers:
            if n == PRIORITY_HEADER:
                raw = v
                break
        requested, unknown = parse_priority(raw)
        cls = requested
        if unknown or requested > self.default_max or self.tenants:
            cls = self._classify(ctx, requested, unknown)
        rps = self.rps
        if rps is not None and not rps.try_acquire(0, now):
            # SMG 1.13's scheduler middleware answers this refusal as its queue-full
            # error (SchedulerError::QueueFull: 429 scheduler_queue_full), counting it in
            # smg_http_rate_limit_total{result="rejected"} only (no allowed count, no
            # smg_scheduler_admit_total outcome): kept as SMG has it, clients and alerts
            # keyed on that code see the same thing from both gateways
            self._rl_rejected[0] += 1
            return self.reply(429, "request rate limit exceeded", "scheduler_queue_full", _RETRY_1)
        e = _Held(cls, self, conn)
        core = self.core
        if core.try_admit(e, now):
            self._admitted[cls][0] += 1
            ctx.add_end_hook(e)
            return None
        if self._can_preempt[cls]:
            victim = core.pick_victim(cls, _probe)
            if victim is not None:
                core.preempt(victim, e, now)
                self._admitted[cls][0] += 1
                ctx.add_end_hook(e)
                self._count("preemption", (CLASS_NAMES[cls], CLASS_NAMES[victim.cls]))
                self._count("admit", (CLASS_NAMES[victim.cls], "preempted"))
                # the victim's exchange answers 503; its end hook then finds its slot gone
                victim.conn.producer.preempt(503, "request preempted by higher-priority traffic",
                                             "scheduler_preempted", _PREEMPTED)
                return None
        if not core.enqueue(e, now):
            self._count("admit", (CLASS_NAMES[cls], "rejected_queue_full"))
            return self.reply(429, "request queue is full for this priority class", "scheduler_queue_full",
                              _RETRY_1)
        e.fut = fut = asyncio.get_running_loop().create_future()
        ctx.add_end_hook(e)
        _arm(self, core.next_wakeup())
        return fut

    def _classify(self, ctx, requested: int, unknown: bool) -> int:
        tenant = ctx.tenant or ANONYMOUS
        label = None
        if unknown:
            label = self._tenant_label(tenant)
            self._count("unknown", (label,))
        top = self.tenants.get(tenant, self.default_max)
        if requested <= top:
            return requested
        self._count("clamp", (label or self._tenant_label(tenant), CLASS_NAMES[requested], CLASS_NAMES[top]))
        return top

    def _tenant_label(self, tenant: str) -> str:
        labels = self._labels
        if tenant in labels:
            return tenant
        if len(labels) < self.top_n:
            labels.add(tenant)
            return tenant
        return OTHER_TENANT

    def _count(self, family: str, key: tuple) -> None:
        if self._m is not None:
            self._m[family].inc(key)

    # -- grants, timeouts, releases ----------------------------------------------------

    def _ended(self, e: _Held) -> None:
        """``e``'s end hook: the request ended, however."""
        st = e.state
        core = self.core
        if st is S.QUEUED:
            core.cancel(e)
            now = self.now()
            self._count("admit", (CLASS_NAMES[e.cls], "client_cancelled"))
            self._waited(e, now)
        elif st is S.ADMITTED:
            now = self.now()
            granted = core.release(e, now)
            if granted:
                self._granted(granted, now)
        else:
            core.release(e, 0.0)  # preempted (its slot went to the preemptor), or already out

    def _granted(self, granted, now: float) -> None:
        for g, promoted in granted:
            self._admitted[g.cls][0] += 1
            self._waited(g, now)
            if promoted:
                self._count("starvation", (CLASS_NAMES[g.cls],))
            fut = g.fut
            if not fut.done():
                fut.set_result(None)

    def _waited(self, e, now: float) -> None:
        if self._m is not None:
            self._m["wait"].observe((CLASS_NAMES[e.cls],), max(now - e.since, 0.0))

    def on_timeout(self) -> None:
        """The timer wheel: queue timeouts and starvation promotions."""
        self._armed = None
        core = self.core
        now = self.now()
        for e in core.expire(now):
            self._count("admit", (CLASS_NAMES[e.cls], "rejected_queue_timeout"))
            self._waited(e, now)
            if not e.fut.done():
                e.fut.set_result(self.reply(408, "timed out waiting for an admission slot",
                                            "scheduler_queue_timeout"))
        self._granted(core.dispatch(now), now)
        _arm(self, core.next_wakeup())

    # -- capacity ----------------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Recomputes the fleet capacity (SMG's 4 tiers); a change re-runs dispatch."""
        self._refresh_at = now + CAPACITY_REFRESH_SECS
        cap, self.source = fleet_capacity(self.reports(), self.override, self.fallback)
        core = self.core
        if cap != core.capacity:
            log.info("priority scheduler capacity %d -> %d (%s)", core.capacity, cap, self.source)
            core.set_capacity(cap)
            self._granted(core.dispatch(now), now)
            _arm(self, core.next_wakeup())

    def gauges(self) -> dict:
        """The scrape-time gauge families (Metrics.add_scheduler)."""
        now = self.now()
        if now >= self._refresh_at:
            self.refresh(now)
        core = self.core
        return {
            "smg_scheduler_inflight": [((CLASS_NAMES[c],), core.counts[c]) for c in CLASSES],
            "smg_scheduler_queue_depth": [((CLASS_NAMES[c],), core.queue_depth(c)) for c in CLASSES],
            "smg_scheduler_queue_size_limit": [((CLASS_NAMES[c],), core.queue_limit(c)) for c in CLASSES],
            "smg_scheduler_class_capacity_pressure": [((CLASS_NAMES[c],), core.pressure(c)) for c in CLASSES],
            "smg_scheduler_utilization": [((), core.utilization())],
        }

    def idle(self) -> bool:
        """Nothing in flight or queued (every slot back)."""
        return self.core.inflight == 0 and self.core.queued == 0


def healthy_reports(workers, ready) -> list:
    """The ``max_running_requests`` each worker whose status is ``ready`` had its engine
    report (None: none)."""
    out = []
    for w in workers:
        if w.status == ready:
            rep = w.engine
            v = rep.get("max_running_requests") if rep else None
            out.append(v if type(v) is int and v >= 0 else None)
    return out
