"""A coarse timer wheel: many deadlines, one periodic sweep, O(1) add and remove.

Per-request ``loop.call_at`` handles cost an allocation and a cancel on every request;
request deadlines are long (minutes) and 0.1 s precision is plenty, so deadlines are
grouped in buckets of ``resolution`` seconds and expired by the gateway's sweep.
"""
from __future__ import annotations

import heapq


class TimerWheel:
    __slots__ = ("_res", "_buckets", "_keys")

    def __init__(self, resolution: float = 0.1) -> None:
        self._res = resolution
        self._buckets: dict = {}
        self._keys: list = []  # heap of bucket keys present in _buckets

    def add(self, obj, deadline: float) -> int:
        """Registers ``obj`` to expire at ``deadline``; returns the key for ``remove``."""
        key = int(deadline / self._res) + 1
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
        b.add(obj)
        return key

    def remove(self, obj, key: int) -> None:
        b = self._buckets.get(key)
        if b is not None:
            b.discard(obj)

    def expire(self, now: float) -> list:
        """Removes and returns every object whose deadline is at or before ``now``."""
        cutoff = int(now / self._res)
        keys = self._keys
        out: list = []
        while keys and keys[0] <= cutoff:
            b = self._buckets.pop(heapq.heappop(keys), None)
            if b:
                out.extend(b)
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())
