"""Policy factory and the per-model policy registry.

One policy instance per model (workers serving no declared model share the ``None``
key). An instance is created when the first worker of its model arrives and dropped
with the last one, driven by the worker registry's events.
"""
from __future__ import annotations

from typing import Callable

from smg.routing.bucket import BucketPolicy
from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.consistent_hashing import ConsistentHashingPolicy
from smg.routing.least_load import LeastLoadPolicy
from smg.routing.manual import ManualPolicy
from smg.routing.passthrough import PassthroughPolicy
from smg.routing.policy import Policy
from smg.routing.power_of_two import PowerOfTwoPolicy
from smg.routing.prefix_hash import PrefixHashPolicy
from smg.routing.random import RandomPolicy
from smg.routing.round_robin import RoundRobinPolicy

FACTORIES: dict = {cls.name: cls for cls in (
    CacheAwarePolicy, PowerOfTwoPolicy, ConsistentHashingPolicy, PrefixHashPolicy, ManualPolicy, BucketPolicy,
    LeastLoadPolicy, RoundRobinPolicy, RandomPolicy, PassthroughPolicy)}


def make_policy(name: str, config=None) -> Policy:
    """Builds policy ``name``; classes taking settings accept ``config`` (attributes named
    as in smg/config/schema.py)."""
    try:
        cls = FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}") from None
    return cls(config) if getattr(cls, "takes_config", False) else cls()


# The worker registry's record names this module acts on (smg/workers/events.py); the
# routing layer sits below the workers layer, so it knows them as the wire names they are.
ADDED = "worker_added"
REMOVED = "worker_removed"


class PolicyRegistry:
    """``workers``: the worker registry (``subscribe(fn, with_worker=True)``, ``all()``);
    ``role``: only workers of that worker type are given to the policies (prefill-decode
    mode keeps one registry per role, each with its own policy name); None: all."""

    def __init__(self, workers, default: str, config=None,
                 factory: Callable[..., Policy] = make_policy, role: str | None = None) -> None:
        self._default = default
        self._role = role
        self._config = config
        self._factory = factory
        self._by_model: dict = {}
        self._workers = workers
        workers.subscribe(lambda rec, w: self._on_event(rec.event, w), with_worker=True)

    def _keys(self, worker) -> tuple:
        return worker.models or (None,)

    def _on_event(self, event: str, worker) -> None:
        if self._role is not None and worker.worker_type != self._role:
            return
        if event == ADDED:
            for key in self._keys(worker):
                p = self._by_model.get(key)
                if p is None:
                    p = self._by_model[key] = self._factory(self._default, self._config)
                p.on_worker_added(worker)
        elif event == REMOVED:
            for key in self._keys(worker):
                p = self._by_model.get(key)
                if p is None:
                    continue
                p.on_worker_removed(worker)
                if not any((key in w.models or (key is None and not w.models)) and
                           (self._role is None or w.worker_type == self._role) for w in self._workers.all()):
                    del self._by_model[key]

    def get(self, model: str | None) -> Policy:
        """The policy for ``model``; wildcard workers' policy when the model has none."""
        p = self._by_model.get(model)
        if p is None:
            p = self._by_model.get(None)
            if p is None:
                # no worker names the model and none takes any: selection answers before
                # asking, so this is a caller's odd case; a policy made for it is not kept
                # (client input must not grow this dict)
                p = self._factory(self._default, self._config)
        return p

    def reconfigure(self, config) -> None:
        """New settings for the live policies and those made later: each live policy with
        a ``configure(config)`` re-reads its parameters, keeping its routing state (trees,
        assignments). Which settings a policy re-reads is its ``SETTINGS``."""
        self._config = config
        for p in list(self._by_model.values()):
            configure = getattr(p, "configure", None)
            if configure is not None:
                configure(config)

    def models(self) -> list:
        return list(self._by_model)

    def feedback_totals(self) -> list:
        """``[(model or "*", FeedbackStats)]`` of the policies running cache_aware's closed
        loop (smg/routing/cache_feedback.py)."""
        out = []
        for model, p in list(self._by_model.items()):
            fb = getattr(p, "feedback", None)
            if fb is not None:
                out.append((model or "*", fb.stats))
        return out

    def maintain(self, now: float) -> None:
        """Periodic upkeep (eviction, TTLs), called by the gateway's sweep."""
        for p in list(self._by_model.values()):
            p.maintain(now)
