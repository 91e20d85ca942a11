"""The registry of workers.

Rules:
- Every change is an explicit event (``added``, ``removed``, ``status``) delivered to
  listeners in order; nothing else mutates the membership. A later issue can replicate
  the same events to sibling processes and hosts.
- ``candidates(model)`` is what routing sees: READY workers serving the model. It is
  cached per model and the cache is dropped on every event, so the hot path does a
  single dict lookup.
"""
from __future__ import annotations

from typing import Callable

from smg.workers.worker import FAILED, NOT_READY, READY, Worker

ADDED = "added"
REMOVED = "removed"
STATUS = "status"
BREAKER = "breaker"


class WorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict = {}
        self._listeners: list = []
        self._candidates: dict = {}

    def subscribe(self, listener: Callable[[str, Worker], None]) -> None:
        """``listener(event, worker)`` is called after every change."""
        self._listeners.append(listener)

    def _emit(self, event: str, worker: Worker) -> None:
        self._candidates.clear()
        for fn in self._listeners:
            fn(event, worker)

    def add(self, worker: Worker) -> None:
        if worker.id in self._workers:
            raise ValueError(f"worker {worker.id} already registered")
        self._workers[worker.id] = worker
        self._emit(ADDED, worker)

    def remove(self, worker_id: str) -> Worker | None:
        w = self._workers.pop(worker_id, None)
        if w is not None:
            self._emit(REMOVED, w)
        return w

    def set_status(self, worker: Worker, status: str) -> None:
        if worker.status != status:
            worker.status = status
            if worker.id in self._workers:
                self._emit(STATUS, worker)

    def set_breaker_open(self, worker: Worker, is_open: bool) -> None:
        """The worker's circuit breaker opened (out of routing) or left open."""
        if worker.breaker_open != is_open:
            worker.breaker_open = is_open
            if worker.id in self._workers:
                self._emit(BREAKER, worker)

    def set_models(self, worker: Worker, models: tuple, cards: list) -> None:
        """Changes what a worker serves (as a remove + add pair of events)."""
        present = worker.id in self._workers
        if present:
            self.remove(worker.id)
        worker.models = tuple(models)
        worker.model_cards = cards
        if present:
            self.add(worker)

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def find_url(self, url: str) -> Worker | None:
        url = url.rstrip("/")
        for w in self._workers.values():
            if w.url == url:
                return w
        return None

    def all(self) -> list:
        return list(self._workers.values())

    def candidates(self, model: str | None) -> list:
        """READY workers serving ``model`` whose breaker is not open (None: every model)."""
        c = self._candidates.get(model)
        if c is None:
            c = [w for w in self._workers.values()
                 if w.status == READY and not w.breaker_open and w.serves(model)]
            self._candidates[model] = c
        return c

    def fallback(self, model: str | None) -> list:
        """Panic set, for when ``candidates`` is empty: every worker serving ``model`` that
        is not draining and has been verified once (ready with an open breaker, not_ready,
        failed). Health checks and breakers lag reality; when they exclude everyone, trying
        the workers beats refusing the request outright."""
        return [w for w in self._workers.values()
                if w.status in (READY, NOT_READY, FAILED) and w.serves(model)]

    def knows_model(self, model: str) -> bool:
        """True if any registered worker (whatever its status) serves ``model``."""
        return any(w.serves(model) for w in self._workers.values())

    def ready_count(self) -> int:
        return len(self.candidates(None))

    def __len__(self) -> int:
        return len(self._workers)
