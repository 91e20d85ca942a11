"""manual: sticky sessions. A routing key stays on the worker it was first given for as long
as that worker is a candidate, and is never moved to rebalance (scale-up does not
redistribute existing keys).

Key: ``X-SMG-Routing-Key`` (non-empty). Per key the policy keeps up to
``MAX_WORKERS_PER_KEY`` (2) worker ids and the time of last use:

- hit: the first of its workers that is still a candidate;
- all of them gone: a new worker by the assignment mode, appended (the oldest dropped
  beyond 2, so a key that moved can move back to where its KV cache may still be);
- new key: a worker by the assignment mode, ``assignment_mode``: ``random`` (the
  default, also when unset), ``min_load`` (fewest in flight, then fewer processed, then
  earlier), ``min_group`` (fewest routing keys, then fewest in flight, then earlier) or
  ``delegate`` (the ``underlying`` policy's choice, then pinned like any other; with no
  underlying policy, as for ``--policy manual`` itself, the worker with fewest in flight);
- no key: a worker by the assignment mode, nothing remembered.

An underlying policy sees every event (worker added/removed, completion, maintain), so it
keeps its own state current whether or not it chose the worker.

Keys idle for more than ``max_idle_secs`` are dropped by ``maintain(now)``.

Time: the policy never reads a clock. It stamps keys with the ``now`` of the latest
``maintain`` call (the gateway's sweep, every 0.5 s), which is resolution enough for a TTL
of hours. Keys are kept in least-recently-used order, so expiry pops idle keys off the
front in O(expired), not a scan of every key.

Deliberately better than SMG:

- Session affinity without a routing-key header (smg.md §16 item 9): the body's
  ``prompt_cache_key`` (the OpenAI API field agent frameworks send for exactly this) is
  used when there is no ``X-SMG-Routing-Key``.
- Memory is bounded: beyond ``MAX_KEYS`` keys the least recently used one is forgotten
  (SMG keeps every key for 4 hours whatever the rate of new keys), and keys longer than
  ``MAX_KEY_BYTES`` are stored as a digest.

State changes only through ``bind``, ``touch`` and ``expire`` (to be replicated to
sibling gateway processes as events).
"""
from __future__ import annotations

import random as _random
from collections import OrderedDict
from hashlib import blake2b

from smg.routing.consistent_hashing import request_key
from smg.routing.least_load import CandidateIndex, config_value, least_loaded
from smg.routing.policy import Policy

#: Workers remembered per key (SMG's bound): the current one and the one before it.
MAX_WORKERS_PER_KEY = 2
#: Keys remembered at most. A key costs ~300 bytes (key of at most MAX_KEY_BYTES, entry
#: lists, dict slot), so this caps the map near 300 MiB; clients minting a key per request then churn the oldest keys
#: out instead of growing the map for the whole 4-hour TTL.
MAX_KEYS = 1 << 20

#: Longer keys are stored as their 16-byte BLAKE2b digest, so that MAX_KEYS bounds memory
#: whatever clients send (a header may be up to max_header_size, 32 KiB, long). Session
#: ids and UUIDs are far shorter; a digest collision is ~2^-64 at MAX_KEYS keys.
MAX_KEY_BYTES = 64

ASSIGNMENT_MODES = ("random", "min_load", "min_group", "delegate")


class ManualPolicy(Policy):
    name = "manual"
    takes_config = True

    def __init__(self, config=None, seed: int | None = None, max_keys: int = MAX_KEYS,
                 underlying: Policy | None = None) -> None:
        mode = config_value(config, "assignment_mode") or "random"
        if mode not in ASSIGNMENT_MODES:
            raise ValueError(f"unknown assignment_mode {mode!r}")
        self.assignment_mode = mode
        self.underlying = underlying
        self.needs_text = underlying is not None and underlying.needs_text
        self.max_idle = float(config_value(config, "max_idle_secs"))
        self.max_keys = max_keys
        self._random = _random.Random(seed).random
        # key -> [worker ids (oldest first, at most MAX_WORKERS_PER_KEY), last use];
        # least recently used first. ``last use`` is None before the first maintain().
        self._keys: OrderedDict = OrderedDict()
        self._groups: dict = {}  # worker id -> number of keys listing it
        self._now = None
        self._index = CandidateIndex()

    # -- selection -------------------------------------------------------------------------

    def select(self, workers: list, request):
        key = request_key(request, implicit=False)
        if key is None:
            return self.assign(workers, request)
        if len(key) > MAX_KEY_BYTES:
            key = b"#" + blake2b(key, digest_size=16).digest()
        entry = self._keys.get(key)
        if entry is not None:
            index = self._index
            for wid in entry[0]:
                w = index.get(workers, wid)
                if w is not None:
                    self.touch(key)
                    return w
        w = self.assign(workers, request)
        if w is not None:
            self.bind(key, w.id)
        return w

    def assign(self, workers: list, request=None):
        """A worker for a new (or homeless) key, by the assignment mode; None only when
        the underlying policy refuses to choose."""
        mode = self.assignment_mode
        if mode == "random":
            return workers[int(self._random() * len(workers))]
        if mode == "min_load":
            return least_loaded(workers)
        if mode == "delegate":
            if self.underlying is None:
                return least_loaded(workers)
            return self.underlying.select(workers, request)
        groups = self._groups
        best = workers[0]
        bg = groups.get(best.id, 0)
        bl = best.inflight
        for w in workers:
            g = groups.get(w.id, 0)
            if g < bg or (g == bg and w.inflight < bl):
                best = w
                bg = g
                bl = w.inflight
        return best

    # -- state changes ---------------------------------------------------------------------

    def bind(self, key: bytes, worker_id: str) -> None:
        """Appends ``worker_id`` to ``key``'s workers (creating the key) and marks it used."""
        keys = self._keys
        groups = self._groups
        entry = keys.get(key)
        if entry is None:
            entry = keys[key] = [[], self._now]
            if len(keys) > self.max_keys:
                self._drop(*keys.popitem(last=False))
        else:
            keys.move_to_end(key)
            entry[1] = self._now
        ids = entry[0]
        if worker_id in ids:
            ids.remove(worker_id)
        else:
            groups[worker_id] = groups.get(worker_id, 0) + 1
        ids.append(worker_id)
        if len(ids) > MAX_WORKERS_PER_KEY:
            self._ungroup(ids.pop(0))

    def touch(self, key: bytes) -> None:
        """``key`` was used now."""
        self._keys.move_to_end(key)
        self._keys[key][1] = self._now

    def expire(self, now: float) -> int:
        """Drops keys unused for more than ``max_idle_secs`` before ``now``; returns how many."""
        keys = self._keys
        cutoff = now - self.max_idle
        n = 0
        while keys:
            key, entry = next(iter(keys.items()))
            last = entry[1]
            if last is None or last >= cutoff:  # None: made before the first maintain()
                break
            del keys[key]
            self._drop(key, entry)
            n += 1
        return n

    def _drop(self, key, entry) -> None:
        for wid in entry[0]:
            self._ungroup(wid)

    def _ungroup(self, worker_id: str) -> None:
        n = self._groups.get(worker_id, 0) - 1
        if n > 0:
            self._groups[worker_id] = n
        else:
            self._groups.pop(worker_id, None)

    # -- events ------------------------------------------------------------------------------

    def on_worker_added(self, worker) -> None:
        if self.underlying is not None:
            self.underlying.on_worker_added(worker)

    def on_worker_removed(self, worker) -> None:
        if self.underlying is not None:
            self.underlying.on_worker_removed(worker)

    def on_complete(self, worker, ok: bool) -> None:
        if self.underlying is not None:
            self.underlying.on_complete(worker, ok)

    def maintain(self, now: float) -> None:
        if self.underlying is not None:
            self.underlying.maintain(now)
        if self._now is None:
            # Keys made before the first sweep carry no time: they were used just now.
            for entry in self._keys.values():
                entry[1] = now
        self._now = now
        self.expire(now)

    def snapshot(self) -> dict:
        """Diagnostic snapshot: key -> list of worker ids."""
        return {k: list(e[0]) for k, e in self._keys.items()}
