"""Routing keys held per worker: the ``smg_worker_routing_keys_active{worker}`` gauge.

A request carrying an ``X-SMG-Routing-Key`` header holds its key on the worker its
current attempt is sent to, from that send until the request ends (answered, failed or
abandoned). The gauge is the number of distinct keys each worker holds, whatever the
routing policy; a worker's series appears with the first keyed request sent to it and
stays (at 0 when idle) while the worker is registered.

Rules:
- Cost: ``wrap`` puts one header lookup in front of each upstream send; a request
  without the header allocates nothing. A keyed request costs one small hold object
  (its end hook) and two dict updates.
- A retry on another worker moves the hold: a key is never counted on a worker its
  request has left.
- Nothing here reads a clock or the network; the gauge is read at scrape time.
"""
from __future__ import annotations

from smg.routing.consistent_hashing import HDR_ROUTING_KEY


class _Hold:
    """One keyed request's hold, run as its end hook (releases the key)."""

    __slots__ = ("owner", "key", "url")

    def __init__(self, owner, key: bytes, url: str) -> None:
        self.owner = owner
        self.key = key
        self.url = url

    def __call__(self, ctx) -> None:
        if self.url is not None:
            self.owner._release(self.url, self.key)
            self.url = None


class RoutingKeysHeld:
    __slots__ = ("by_worker",)

    def __init__(self) -> None:
        self.by_worker: dict = {}  # worker URL -> {key: requests holding it}

    def wrap(self, open_leg):
        """``open_leg(worker, owner)`` that first records the send's key (``owner.ctx``:
        the request's context; owners without one, such as fan-outs, hold nothing)."""
        def open_tracked(worker, owner):
            ctx = getattr(owner, "ctx", None)
            if ctx is not None:
                key = ctx.header(HDR_ROUTING_KEY)
                if key:
                    self.hold(ctx, key, worker.url)
            return open_leg(worker, owner)
        return open_tracked

    def hold(self, ctx, key: bytes, url: str) -> None:
        """``ctx``'s request, keyed ``key``, is now sent to the worker at ``url``."""
        for h in ctx.end_hooks():
            if type(h) is _Hold and h.owner is self and h.url is not None:
                if h.url == url:
                    return
                self._release(h.url, h.key)
                h.url = url
                self._take(url, key)
                return
        self._take(url, key)
        ctx.add_end_hook(_Hold(self, key, url))

    def _take(self, url: str, key: bytes) -> None:
        keys = self.by_worker.get(url)
        if keys is None:
            keys = self.by_worker[url] = {}
        keys[key] = keys.get(key, 0) + 1

    def _release(self, url: str, key: bytes) -> None:
        keys = self.by_worker.get(url)
        if keys is None:
            return
        n = keys.get(key, 0) - 1
        if n > 0:
            keys[key] = n
        else:
            keys.pop(key, None)

    def gauge(self, registry) -> list:
        """``[((worker URL,), distinct keys held)]`` for the registered workers that have
        held a key; a removed worker's idle entry is dropped."""
        urls = {w.url for w in registry.all()}
        for url in [u for u, keys in self.by_worker.items() if u not in urls and not keys]:
            del self.by_worker[url]
        return [((url,), len(keys)) for url, keys in self.by_worker.items() if url in urls]
