"""Worker events as plain records, and the bus that carries the lifecycle ones.

Rules:
- A record is a frozen dataclass whose fields are only ``str``, ``int``, ``float``,
  ``bool`` or ``tuple`` (of those): no Worker objects, no callables. A record means the
  same thing in another process, so the registry's membership events can later be
  replicated to sibling processes and other gateways. ``to_dict()`` gives a JSON-ready
  dict (tuples as lists, plus ``"type"``: the record's ``event`` name) and ``from_dict``
  rebuilds the record, checking every field's type.
- Registry records (``WorkerAdded``, ``WorkerRemoved``, ``StatusChanged``,
  ``BreakerChanged``) are what ``WorkerRegistry.subscribe`` listeners receive; a
  listener needing the Worker looks it up by ``worker_id``. A models change is a
  ``WorkerRemoved`` followed by a ``WorkerAdded`` carrying the new models.
- Lifecycle records (``HealthChecked``, ``BreakerTransition``, ``LoadPolled``,
  ``DiscoverySynced``, ``DiscoveryChanged``) are emitted by the WorkerManager on an ``EventBus``; metrics
  (``Metrics.on_event``) and anything else subscribe to the bus. Emitting calls the
  subscribers in order, synchronously, on the loop: they must not block.
"""
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

_SCALARS = (str, int, float, bool)


class Record:
    """Base of every event record (the class attribute ``event`` names the record type)."""

    __slots__ = ()
    event: ClassVar[str] = ""

    def to_dict(self) -> dict:
        d = {"type": self.event}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


RECORDS: dict = {}  # event name -> record class


def _record(cls):
    """Makes ``cls`` a frozen, slotted dataclass and registers it by ``event``."""
    cls = dataclass(frozen=True, slots=True)(cls)
    for f in fields(cls):
        if f.type not in (*_SCALARS, tuple):
            raise TypeError(f"{cls.__name__}.{f.name}: records hold only str/int/float/bool/tuple")
    if not cls.event or cls.event in RECORDS:
        raise TypeError(f"{cls.__name__}: event must be set and unique")
    RECORDS[cls.event] = cls
    return cls


def _check(name: str, value, kind: type):
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, _SCALARS) for x in value):
            raise ValueError(f"{name}: expected a list of scalars")
        return tuple(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number")
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ValueError(f"{name}: expected {kind.__name__}")
    return value


def from_dict(d: dict) -> Record:
    """Rebuilds a record from ``to_dict()`` output (e.g. after a JSON round trip).

    Raises:
        ValueError: unknown ``type``, missing or unknown fields, a field of the wrong type.
    """
    if not isinstance(d, dict):
        raise ValueError("event: expected an object")
    cls = RECORDS.get(d.get("type"))
    if cls is None:
        raise ValueError(f"event: unknown type {d.get('type')!r}")
    names = {f.name: f.type for f in fields(cls)}
    extra = set(d) - set(names) - {"type"}
    if extra:
        raise ValueError(f"{cls.event}: unknown fields {sorted(extra)}")
    missing = set(names) - set(d)
    if missing:
        raise ValueError(f"{cls.event}: missing fields {sorted(missing)}")
    return cls(**{n: _check(f"{cls.event}.{n}", d[n], t) for n, t in names.items()})


# -- registry records (membership, status, breaker): the replicable routing state

@_record
class WorkerAdded(Record):
    event: ClassVar[str] = "worker_added"
    worker_id: str
    url: str            # the logical key (``base@rank`` for a DP rank)
    base_url: str       # the network address
    models: tuple       # empty: serves any model
    worker_type: str
    status: str


@_record
class WorkerRemoved(Record):
    event: ClassVar[str] = "worker_removed"
    worker_id: str
    url: str
    models: tuple
    worker_type: str


@_record
class StatusChanged(Record):
    event: ClassVar[str] = "status_changed"
    worker_id: str
    status: str


@_record
class BreakerChanged(Record):
    event: ClassVar[str] = "breaker_changed"
    worker_id: str
    open: bool          # True: out of routing


# -- lifecycle records (the WorkerManager's EventBus): observability

@_record
class HealthChecked(Record):
    event: ClassVar[str] = "health_checked"
    worker_id: str
    url: str
    worker_type: str
    ok: bool


@_record
class BreakerTransition(Record):
    event: ClassVar[str] = "breaker_transition"
    worker_id: str
    url: str
    old: str
    new: str


@_record
class LoadPolled(Record):
    event: ClassVar[str] = "load_polled"
    worker_id: str
    url: str
    mode: str           # "poll": the monitor fetched the worker's load this tick


@_record
class DiscoverySynced(Record):
    event: ClassVar[str] = "discovery_synced"
    source: str         # "file" | "kubernetes"
    seconds: float


@_record
class DiscoveryChanged(Record):
    event: ClassVar[str] = "discovery_changed"
    source: str
    kind: str           # "registration" | "deregistration"
    result: str         # registration: "success" | "invalid"; deregistration: "removed"


class EventBus:
    """``subscribe(fn)``: ``fn(record)`` is called, in subscription order, on every ``emit``."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list = []

    def subscribe(self, fn: Callable[[Record], None]) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[Record], None]) -> None:
        self._subscribers.remove(fn)

    def emit(self, record: Record) -> None:
        for fn in self._subscribers:
            fn(record)
