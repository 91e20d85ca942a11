"""The priority scheduler (SMG's ``--priority-scheduler-enabled``): four classes sharing
a pool of slots, with reservations, per-class FIFO queues, starvation promotion and
preemption. Sans-I/O: time comes in as ``now`` (seconds, monotonic), requests are
``Entry`` objects the I/O shell (smg/admission/admit.py) makes and resolves.

Rules (SMG 1.13, docs "Priority Scheduler Reference"):
- Classes, ascending: bulk < default < interactive < system. A request's class comes
  from ``X-SMG-Priority`` (case-insensitive, trimmed; missing, empty or unknown →
  default) and is clamped down to its tenant's ``max_class`` (``parse_priority``).
- Capacity is one fleet-wide number (``fleet_capacity``, SMG's 4 tiers): the operator
  override; else, when every healthy worker reports ``max_running_requests``, their
  sum; else (mixed) reporters' values plus ``SLOTS_PER_WORKER`` per non-reporter; with
  no healthy worker, the fallback (``--max-concurrent-requests``).
- Each class reserves ``max(reserved_floor, ceil(reserved_per_slot × capacity))``
  slots. A higher class's *unused* reservation is held back from lower classes; a
  class's own reservation never limits itself (``headroom``). When a capacity dip makes
  the reservations sum past capacity, the lowest classes' are cut first.
- Admission: a request takes a slot at once when its class has headroom
  (``try_admit``); else a preempt-capable class may take the slot of one lower-class
  request that has produced no byte yet (``pick_victim`` + ``preempt``: lowest class
  first, most recently admitted first within it, at most one victim per admission);
  else it joins its class's FIFO queue (``enqueue``; a full queue refuses: 429).
- Dispatch (after every release, capacity change and timer): first the starvation
  override — bulk, default, interactive in that order, a head older than its class's
  ``starvation_threshold_secs`` is admitted if any slot is free, reservations
  notwithstanding; otherwise the highest class with a waiter is served, one waiter per
  pass, if it has headroom (a lower class never has more headroom than a higher one).
- A waiter queued ``queue_timeout_secs`` or more is expired (408) by ``expire``.
- Every entry ends exactly once: queued entries are admitted, cancelled or expired;
  admitted entries are released or preempted (a preempted entry's slot passes to its
  preemptor at once, so its later ``release`` changes nothing).
- No admission happens while the class has no headroom, nor beyond capacity; a slot is
  counted from admission to release, never lost or counted twice (the Hypothesis
  state machine in tests/unit/test_scheduler.py checks both).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

BULK, DEFAULT, INTERACTIVE, SYSTEM = 0, 1, 2, 3
CLASSES = (BULK, DEFAULT, INTERACTIVE, SYSTEM)
CLASS_NAMES = ("bulk", "default", "interactive", "system")
BY_NAME = {n: i for i, n in enumerate(CLASS_NAMES)}
_BY_HEADER = {n.encode(): i for i, n in enumerate(CLASS_NAMES)}

# SMG's slots for a healthy worker that does not report max_running_requests (tier 3).
SLOTS_PER_WORKER = 64

# capacity tiers (SMG CapacitySource)
SOURCE_OVERRIDE, SOURCE_REPORTED, SOURCE_MIXED, SOURCE_FALLBACK = "override", "worker_reported", "mixed", "fallback"

# entry states
NEW, QUEUED, ADMITTED, RELEASED, PREEMPTED, CANCELLED, EXPIRED = (
    "new", "queued", "admitted", "released", "preempted", "cancelled", "expired")

_NONE: tuple = ()


def parse_priority(value: bytes | None) -> tuple[int, bool]:
    """``X-SMG-Priority`` → (class, unknown): ``unknown`` when a non-empty value names no
    class (it counts as default, and in ``smg_scheduler_unknown_priority_value_total``)."""
    if value is None:
        return DEFAULT, False
    v = value.strip().lower()
    c = _BY_HEADER.get(v)
    if c is None:
        return DEFAULT, bool(v)
    return c, False


@dataclass(frozen=True)
class ClassConfig:
    reserved_floor: int
    reserved_per_slot: float
    queue_size: int
    queue_timeout_secs: float
    starvation_threshold_secs: float
    can_preempt: bool


# SMG 1.13's built-in per-class defaults, by class index.
DEFAULT_CLASSES = (
    ClassConfig(0, 0.0, 1024, 300.0, 120.0, False),   # bulk
    ClassConfig(0, 0.10, 512, 60.0, 30.0, False),     # default
    ClassConfig(128, 0.25, 256, 30.0, 5.0, True),     # interactive
    ClassConfig(32, 0.0, 64, 30.0, 5.0, True),        # system
)

_FIELDS = {"reserved_floor": int, "reserved_per_slot": float, "queue_size": int, "queue_timeout_secs": float,
           "starvation_threshold_secs": float, "can_preempt": bool}


def parse_config(doc) -> tuple[tuple, dict]:
    """The ``--priority-scheduler-config`` YAML document (already loaded) → (the four
    ClassConfigs by class index, {tenant key: max class}). Omitted classes and fields
    keep the built-in defaults.

    Raises:
        ValueError: naming the offending key (unknown key or class, wrong type, a
            negative size, a timeout or threshold that is not positive).
    """
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError("expected a mapping with 'classes' and/or 'tenant_policies'")
    extra = set(doc) - {"classes", "tenant_policies"}
    if extra:
        raise ValueError(f"unknown key {sorted(extra)[0]!r} (expected classes, tenant_policies)")
    for key in ("classes", "tenant_policies"):
        if not isinstance(doc.get(key) or {}, dict):
            raise ValueError(f"{key}: expected a mapping")
    classes = list(DEFAULT_CLASSES)
    for name, fields in (doc.get("classes") or {}).items():
        c = BY_NAME.get(name)
        if c is None:
            raise ValueError(f"classes: unknown class {name!r} (expected {', '.join(CLASS_NAMES)})")
        if not isinstance(fields, dict):
            raise ValueError(f"classes.{name}: expected a mapping")
        changes = {}
        for key, value in fields.items():
            kind = _FIELDS.get(key)
            where = f"classes.{name}.{key}"
            if kind is None:
                raise ValueError(f"{where}: unknown field (expected {', '.join(_FIELDS)})")
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{where}: expected true or false")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind is int and not isinstance(value, int)):
                raise ValueError(f"{where}: expected {'an integer' if kind is int else 'a number'}")
            elif not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: must be a finite number >= 0")
            elif key in ("queue_timeout_secs", "starvation_threshold_secs") and value <= 0:
                raise ValueError(f"{where}: must be > 0")
            changes[key] = kind(value)
        classes[c] = replace(classes[c], **changes)
    tenants = {}
    for key, policy in (doc.get("tenant_policies") or {}).items():
        where = f"tenant_policies.{key}"
        if not isinstance(key, str) or not isinstance(policy, dict) or set(policy) != {"max_class"}:
            raise ValueError(f"{where}: expected {{max_class: <class>}}")
        c = BY_NAME.get(policy["max_class"])
        if c is None:
            raise ValueError(f"{where}.max_class: unknown class {policy['max_class']!r}")
        tenants[key] = c
    return tuple(classes), tenants


def fleet_capacity(reports, override: int, fallback: int) -> tuple[int, str]:
    """SMG's 4-tier capacity. ``reports``: one entry per healthy worker, its reported
    ``max_running_requests`` or None. Returns (capacity, source)."""
    if override > 0:
        return override, SOURCE_OVERRIDE
    total = 0
    silent = 0
    n = 0
    for r in reports:
        n += 1
        if r is None:
            silent += 1
        else:
            total += r
    if n == 0:
        return fallback, SOURCE_FALLBACK
    if silent == 0:
        return total, SOURCE_REPORTED
    return total + silent * SLOTS_PER_WORKER, SOURCE_MIXED


def wanted_reservations(classes: tuple, capacity: int) -> list:
    """Reservations by class index as configured: ``max(floor, ceil(per_slot × capacity))``."""
    return [max(c.reserved_floor, math.ceil(c.reserved_per_slot * capacity)) for c in classes]


def reservations(classes: tuple, capacity: int) -> list:
    """Effective reservations by class index: ``wanted_reservations``, cut lowest class
    first when they sum past ``capacity``."""
    res = wanted_reservations(classes, capacity)
    excess = sum(res) - capacity
    for c in CLASSES:
        if excess <= 0:
            break
        cut = min(res[c], excess)
        res[c] -= cut
        excess -= cut
    return res


class Entry:
    """One request: created by the shell (which may subclass it, adding slots), queued
    and/or admitted here. ``cls`` is its class; ``since`` when it arrived."""

    __slots__ = ("cls", "since", "deadline", "state")

    def __init__(self, cls: int) -> None:
        self.cls = cls
        self.since = 0.0
        self.deadline = 0.0
        self.state = NEW

    def __repr__(self) -> str:
        return f"Entry({CLASS_NAMES[self.cls]}, {self.state})"


class PriorityScheduler:
    __slots__ = ("classes", "capacity", "reserved", "counts", "queues", "running", "queued", "track",
                 "_timeouts", "_starve", "_limits")

    def __init__(self, classes: tuple = DEFAULT_CLASSES, capacity: int = 0) -> None:
        self.classes = classes
        self.capacity = 0
        self.reserved = [0, 0, 0, 0]
        self.counts = [0, 0, 0, 0]                   # admitted, not yet released, by class
        self.queues: tuple = tuple(OrderedDict() for _ in CLASSES)   # waiters (Entry -> None), FIFO
        # admitted entries that may still be preemption victims (not known to have
        # produced a byte), in admission order; kept only for classes below a
        # preempt-capable one
        self.running: tuple = tuple(OrderedDict() for _ in CLASSES)
        top = max((c for c in CLASSES if classes[c].can_preempt), default=-1)
        self.track = tuple(c < top for c in CLASSES)
        self.queued = 0
        self._timeouts = tuple(c.queue_timeout_secs for c in classes)
        self._starve = tuple(c.starvation_threshold_secs for c in classes)
        self._limits = tuple(c.queue_size for c in classes)
        self.set_capacity(capacity)

    def set_capacity(self, capacity: int) -> None:
        """A new fleet capacity (reservations follow). Requests already admitted keep
        their slots; call ``dispatch`` afterwards (a larger capacity admits waiters)."""
        self.capacity = capacity
        self.reserved = reservations(self.classes, capacity)

    # -- slot arithmetic -----------------------------------------------------------------

    def headroom(self, cls: int) -> int:
        """Slots ``cls`` may take now (negative after a capacity dip): capacity, less all
        in flight, less the unused reservations of higher classes."""
        n = self.counts
        r = self.reserved
        free = self.capacity - n[0] - n[1] - n[2] - n[3]
        # unrolled over the classes above ``cls`` (this runs on every admission)
        if cls < SYSTEM and r[3] > n[3]:
            free -= r[3] - n[3]
        if cls < INTERACTIVE and r[2] > n[2]:
            free -= r[2] - n[2]
        if cls < DEFAULT and r[1] > n[1]:
            free -= r[1] - n[1]
        return free

    @property
    def inflight(self) -> int:
        c = self.counts
        return c[0] + c[1] + c[2] + c[3]

    def _admit(self, e: Entry) -> None:
        c = e.cls
        e.state = ADMITTED
        self.counts[c] += 1
        if self.track[c]:
            self.running[c][e] = None

    # -- admission ---------------------------------------------------------------------

    def try_admit(self, e: Entry, now: float) -> bool:
        """Admits ``e`` at once if its class has headroom."""
        e.since = now
        if self.headroom(e.cls) <= 0:
            return False
        self._admit(e)
        return True

    def enqueue(self, e: Entry, now: float) -> bool:
        """Queues ``e`` (``since`` is when it arrived); False when its queue is full."""
        c = e.cls
        q = self.queues[c]
        if len(q) >= self._limits[c]:
            return False
        e.since = now
        e.deadline = now + self._timeouts[c]
        e.state = QUEUED
        q[e] = None
        self.queued += 1
        return True

    def cancel(self, e: Entry) -> bool:
        """Removes a queued entry (its client left); False if it was not queued."""
        if e.state is not QUEUED:
            return False
        del self.queues[e.cls][e]
        self.queued -= 1
        e.state = CANCELLED
        return True

    def release(self, e: Entry, now: float):
        """``e``'s request ended: its slot comes back (once; nothing for an entry that was
        never admitted or whose slot went to a preemptor). Returns ``dispatch(now)``."""
        if e.state is not ADMITTED:
            if e.state is PREEMPTED:
                e.state = RELEASED
            return _NONE
        c = e.cls
        e.state = RELEASED
        self.counts[c] -= 1
        if self.track[c]:
            self.running[c].pop(e, None)
        if not self.queued:
            return _NONE
        return self.dispatch(now)

    def started(self, e: Entry) -> None:
        """``e`` produced its first byte: no longer a preemption victim."""
        if self.track[e.cls]:
            self.running[e.cls].pop(e, None)

    def dispatch(self, now: float) -> list:
        """Admits waiters while slots allow (starvation override, then strict priority);
        returns [(entry, promoted)] in admission order."""
        out: list = []
        if not self.queued:
            return out
        queues = self.queues
        counts = self.counts
        starve = self._starve
        while self.queued:
            e = None
            promoted = False
            if counts[0] + counts[1] + counts[2] + counts[3] < self.capacity:
                for c in (BULK, DEFAULT, INTERACTIVE):
                    q = queues[c]
                    if q:
                        head = next(iter(q))
                        if now - head.since > starve[c]:
                            e = head
                            promoted = True
                            break
            if e is None:
                for c in (SYSTEM, INTERACTIVE, DEFAULT, BULK):
                    q = queues[c]
                    if q:
                        if self.headroom(c) > 0:
                            e = next(iter(q))
                        break
            if e is None:
                break
            del queues[e.cls][e]
            self.queued -= 1
            self._admit(e)
            out.append((e, promoted))
        return out

    def expire(self, now: float) -> list:
        """Removes and returns the waiters whose deadline is at or before ``now``."""
        out: list = []
        if not self.queued:
            return out
        for q in self.queues:
            while q:
                head = next(iter(q))
                if head.deadline > now:
                    break
                del q[head]
                self.queued -= 1
                head.state = EXPIRED
                out.append(head)
        return out

    def next_wakeup(self) -> float | None:
        """The earliest moment a timer must call ``expire``/``dispatch``: a head's
        deadline or the moment it starves. None with nothing queued."""
        when = None
        if not self.queued:
            return when
        for c in CLASSES:
            q = self.queues[c]
            if q:
                head = next(iter(q))
                t = head.deadline
                if c != SYSTEM:
                    t = min(t, head.since + self._starve[c])
                if when is None or t < when:
                    when = t
        return when

    # -- preemption --------------------------------------------------------------------

    def pick_victim(self, cls: int, probe) -> Entry | None:
        """A lower-class admitted entry whose slot ``cls`` may take, or None. ``probe(e)``
        asks the shell: True (preemptible now), None (not now), False (never: it produced
        a byte; it is dropped from the candidates). Only if one freed slot gives ``cls``
        headroom; lowest class first, most recently admitted first within a class."""
        if self.headroom(cls) < 0:
            return None
        for c in range(cls):
            run = self.running[c]
            if not run:
                continue
            dead = []
            found = None
            for v in reversed(run):
                r = probe(v)
                if r:
                    found = v
                    break
                if r is not None:
                    dead.append(v)
            for v in dead:
                del run[v]
            if found is not None:
                return found
        return None

    def preempt(self, victim: Entry, e: Entry, now: float) -> None:
        """Moves ``victim``'s slot to ``e`` (admitted now); the victim's later ``release``
        is a no-op. The shell then cancels the victim's request."""
        assert victim.state is ADMITTED and victim.cls < e.cls
        c = victim.cls
        victim.state = PREEMPTED
        self.counts[c] -= 1
        self.running[c].pop(victim, None)
        e.since = now
        self._admit(e)

    # -- gauges ------------------------------------------------------------------------

    def queue_depth(self, cls: int) -> int:
        return len(self.queues[cls])

    def queue_limit(self, cls: int) -> int:
        return self._limits[cls]

    def utilization(self) -> float:
        return self.inflight / self.capacity if self.capacity > 0 else 0.0

    def pressure(self, cls: int) -> float:
        """0..1: the worse of queue fill and slot pressure (share of capacity ``cls``
        cannot take right now)."""
        limit = self._limits[cls]
        qp = len(self.queues[cls]) / limit if limit else 0.0
        cap = self.capacity
        sp = 1.0 - max(self.headroom(cls), 0) / cap if cap > 0 else 1.0
        return min(1.0, max(qp, sp, 0.0))
