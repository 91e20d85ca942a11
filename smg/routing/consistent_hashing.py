"""consistent_hashing: requests carrying the same key go to the same worker, and membership
changes move only about 1/N of the keys (the ring: smg/routing/hash_ring.py).

Precedence (SMG's, first match wins):

1. ``X-SMG-Target-Worker: <index>``: the candidate at that index; a non-integer or
   out-of-range index selects nothing (the gateway answers 503), as in SMG: a client that
   names a worker must not silently get another one.
2. ``X-SMG-Routing-Key: <key>`` (non-empty): the ring owner of the key.
3. Implicit key: the first non-empty of ``Authorization``, ``X-Forwarded-For``, ``Cookie``.
4. Otherwise a uniformly random candidate.

Deliberately better than SMG (session affinity without client-side routing keys,
smg.md §16 item 9): between 2 and 3, the body's ``prompt_cache_key`` (the OpenAI API's own
field for "requests sharing a prefix", which agent frameworks already send) is used as the
key. It is more specific than an API key, so it spreads one tenant's conversations over the
fleet while keeping each on one worker.

The ring is rebuilt only on membership change (added/removed events); health changes are
handled by skipping non-candidates clockwise, so keys of a worker that is briefly unhealthy
come back to it.
"""
from __future__ import annotations

import random as _random

from smg.routing.hash_ring import VNODES, HashRing, hash64
from smg.routing.policy import Policy

HDR_TARGET_WORKER = b"x-smg-target-worker"
HDR_ROUTING_KEY = b"x-smg-routing-key"
#: Implicit session keys, in SMG's order.
IMPLICIT_KEY_HEADERS = (b"authorization", b"x-forwarded-for", b"cookie")
#: Body field used as a routing key when no X-SMG-Routing-Key is sent.
BODY_KEY_FIELD = "prompt_cache_key"

_WANTED = frozenset((HDR_TARGET_WORKER, HDR_ROUTING_KEY) + IMPLICIT_KEY_HEADERS)


def parse_index(value: bytes) -> int | None:
    """A non-negative decimal index, or None (SMG rejects anything else too)."""
    v = value.strip()
    if not v or len(v) > 9 or not v.isdigit():
        return None
    return int(v)


def request_key(request, implicit: bool = True) -> bytes | None:
    """The routing key of ``request`` per steps 2-3 of the precedence (None: no key).
    smg/routing/manual.py shares it with ``implicit=False`` (SMG's manual policy reads only
    X-SMG-Routing-Key: an API key or cookie is too coarse to pin every session to)."""
    found = {}
    for name, value in request.headers:
        if name in _WANTED and value and name not in found:
            found[name] = value
    key = found.get(HDR_ROUTING_KEY)
    if key is not None:
        return key
    bkey = request.body.get(BODY_KEY_FIELD)
    if isinstance(bkey, str) and bkey:
        return bkey.encode("utf-8", "surrogatepass")
    if not implicit:
        return None
    for name in IMPLICIT_KEY_HEADERS:
        v = found.get(name)
        if v is not None:
            return v
    return None


class ConsistentHashingPolicy(Policy):
    name = "consistent_hashing"

    def __init__(self, seed: int | None = None, vnodes: int = VNODES) -> None:
        self.ring = HashRing(vnodes)
        self._random = _random.Random(seed).random

    def on_worker_added(self, worker) -> None:
        self.ring.add(worker.url)

    def on_worker_removed(self, worker) -> None:
        self.ring.remove(worker.url)

    def select(self, workers: list, request):
        target = request.header(HDR_TARGET_WORKER)
        if target is not None:
            i = parse_index(target)
            return workers[i] if i is not None and i < len(workers) else None
        key = request_key(request)
        if key is not None:
            w = self.ring.lookup(hash64(key), workers)
            if w is not None:
                return w
        return workers[int(self._random() * len(workers))]
