"""The registry of workers.

Rules:
- Every change is an explicit event method (``add``, ``remove``, ``set_status``,
  ``set_breaker_open``, ``set_models``); nothing else mutates the membership. Each
  change is delivered to listeners, in order, as a plain serializable record
  (``smg.workers.events``: ``WorkerAdded``, ``WorkerRemoved``, ``StatusChanged``,
  ``BreakerChanged``), so the same stream can later be replicated to sibling
  processes and hosts. A models change is ``WorkerRemoved`` then ``WorkerAdded``.
- ``candidates(model, role)`` is what routing sees: READY workers of worker type
  ``role`` serving the model, breaker not open. Regular traffic (the default role)
  never reaches prefill, decode or encode workers.
- The candidate cache is bounded by the registry's own content, never by client
  input: entries exist only for models some registered worker names explicitly, for
  ``None`` ("every model") and for one shared wildcard entry per role (the workers
  that serve any model), which is what every unknown model string resolves to. A
  cached ``(model, role)`` costs one dict lookup; every event drops the cache.
- ``ready_count()`` counts routable *regular* workers (what ``/readiness`` means).
"""
from __future__ import annotations

from typing import Callable

from smg.workers.events import BreakerChanged, StatusChanged, WorkerAdded, WorkerRemoved
from smg.workers.spec import WORKER_TYPES
from smg.workers.worker import FAILED, NOT_READY, READY, Worker

# The ``event`` names of the registry's records.
ADDED = WorkerAdded.event
REMOVED = WorkerRemoved.event
STATUS = StatusChanged.event
BREAKER = BreakerChanged.event

REGULAR = "regular"
_PANIC_STATUSES = (READY, NOT_READY, FAILED)


class _Wildcard:
    """The cache key standing for "a model no registered worker names"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<any model>"


WILDCARD = _Wildcard()


def _routable(w: Worker) -> bool:
    return w.status == READY and not w.breaker_open


def _panic(w: Worker) -> bool:
    return w.status in _PANIC_STATUSES


class WorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict = {}
        self._listeners: list = []      # (fn, with_worker)
        self._candidates: dict = {}     # (model key, role) -> [Worker]
        self._fallback: dict = {}
        self._named: dict = {}          # model id -> workers naming it (any role)
        self._wildcards = 0             # workers serving any model (any role)

    def subscribe(self, listener: Callable, *, with_worker: bool = False) -> None:
        """``listener(record)`` is called after every change.

        ``with_worker=True`` (in-process consumers that keep per-worker state, e.g. the
        policy registry): ``listener(record, worker)``, where ``worker`` is the live
        Worker (for ``WorkerRemoved``, the one just removed).
        """
        self._listeners.append((listener, with_worker))

    def _emit(self, record, worker: Worker) -> None:
        self._candidates.clear()
        self._fallback.clear()
        for fn, with_worker in self._listeners:
            if with_worker:
                fn(record, worker)
            else:
                fn(record)

    def _count(self, worker: Worker, step: int) -> None:
        if not worker.models:
            self._wildcards += step
        for m in worker.models:
            n = self._named.get(m, 0) + step
            if n > 0:
                self._named[m] = n
            else:
                self._named.pop(m, None)

    # -- events

    def add(self, worker: Worker) -> None:
        if worker.id in self._workers:
            raise ValueError(f"worker {worker.id} already registered")
        if worker.worker_type not in WORKER_TYPES:
            raise ValueError(f"worker {worker.id}: unknown worker_type {worker.worker_type!r}")
        self._workers[worker.id] = worker
        self._count(worker, 1)
        self._emit(WorkerAdded(worker.id, worker.url, worker.base_url, worker.models, worker.worker_type,
                               worker.status), worker)

    def remove(self, worker_id: str) -> Worker | None:
        w = self._workers.pop(worker_id, None)
        if w is not None:
            self._count(w, -1)
            self._emit(WorkerRemoved(w.id, w.url, w.models, w.worker_type), w)
        return w

    def set_status(self, worker: Worker, status: str) -> None:
        if worker.status != status:
            worker.status = status
            if worker.id in self._workers:
                self._emit(StatusChanged(worker.id, status), worker)

    def set_breaker_open(self, worker: Worker, is_open: bool) -> None:
        """The worker's circuit breaker opened (out of routing) or left open."""
        if worker.breaker_open != is_open:
            worker.breaker_open = is_open
            if worker.id in self._workers:
                self._emit(BreakerChanged(worker.id, is_open), worker)

    def set_models(self, worker: Worker, models: tuple, cards: list) -> None:
        """Changes what a worker serves (as a remove + add pair of events)."""
        present = worker.id in self._workers
        if present:
            self.remove(worker.id)
        worker.models = tuple(models)
        worker.model_cards = cards
        if present:
            self.add(worker)

    # -- queries

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def find_url(self, url: str) -> Worker | None:
        """The worker whose logical key (``url``, ``base@rank`` for a DP rank) is ``url``."""
        url = url.rstrip("/")
        for w in self._workers.values():
            if w.url == url:
                return w
        return None

    def at_address(self, base_url: str) -> list:
        """Every worker (each DP rank) whose network address is ``base_url``."""
        base_url = base_url.rstrip("/")
        return [w for w in self._workers.values() if w.base_url == base_url]

    def all(self) -> list:
        return list(self._workers.values())

    def candidates(self, model: str | None, role: str = REGULAR) -> list:
        """READY workers of type ``role`` serving ``model`` whose breaker is not open
        (``None``: every model). Do not mutate the list: it is the cache entry.

        Raises:
            ValueError: ``role`` is not a worker type.
        """
        c = self._candidates.get((model, role))
        if c is None:
            c = self._lookup(self._candidates, model, role, _routable)
        return c

    def fallback(self, model: str | None, role: str = REGULAR) -> list:
        """Panic set, for when ``candidates`` is empty: every worker of type ``role``
        serving ``model`` that is not draining and has been verified once (ready with an
        open breaker, not_ready, failed). Health checks and breakers lag reality; when
        they exclude everyone, trying the workers beats refusing the request outright."""
        c = self._fallback.get((model, role))
        if c is None:
            c = self._lookup(self._fallback, model, role, _panic)
        return c

    def _lookup(self, cache: dict, model: str | None, role: str, keep: Callable) -> list:
        """The cache miss path: resolves an unknown model to the shared wildcard entry,
        so that the cache holds at most (named models + 2) entries per role."""
        key_model = model if model is None or model in self._named else WILDCARD
        key = (key_model, role)
        c = cache.get(key)
        if c is None:
            if role not in WORKER_TYPES:
                raise ValueError(f"unknown worker role {role!r}")
            if key_model is None:
                c = [w for w in self._workers.values() if w.worker_type == role and keep(w)]
            elif key_model is WILDCARD:
                c = [w for w in self._workers.values() if w.worker_type == role and not w.models and keep(w)]
            else:
                c = [w for w in self._workers.values()
                     if w.worker_type == role and (not w.models or model in w.models) and keep(w)]
            cache[key] = c
        return c

    def names(self, model) -> bool:
        """True if some registered worker names ``model`` explicitly (a bounded set: use it
        to decide whether a client's model string may become a label or a cache key)."""
        return model in self._named

    def knows_model(self, model: str) -> bool:
        """True if any registered worker (whatever its status or type) serves ``model``."""
        return self._wildcards > 0 or model in self._named

    def ready_count(self) -> int:
        """Routable regular workers (READY, breaker not open): what readiness means."""
        return len(self.candidates(None, REGULAR))

    def cache_size(self) -> int:
        """Entries in the candidate and fallback caches (bounded; see the module rules)."""
        return len(self._candidates) + len(self._fallback)

    def __len__(self) -> int:
        return len(self._workers)
