"""HashRing: the consistent-hash ring consistent_hashing and prefix_hash route on.

Theory of operation: each member (a worker URL) owns ``VNODES`` points on a 64-bit ring at
``hash64(f"{url}#{i}")``. A key is hashed the same way; its owner is the member of the
first point at or after the key's hash, wrapping around, skipping points whose member is
not a candidate right now (unhealthy, or not serving the model). Because points depend only
on the member's URL, adding a member moves only the keys that now land on its points, and
removing one moves only its own keys: about 1/N of the keyspace either way.

Rules:
- Membership changes only through ``add`` / ``remove`` (driven by the registry's
  added/removed events), so a sibling gateway process fed the same events builds the same
  ring. Status changes do not touch the ring; the walk skips non-candidates instead.
- Changes are batched: the sorted point array is rebuilt at the next lookup, once per
  burst of changes (a fleet of 1,000 workers registering at start-up sorts once).
- A candidate the ring has never heard of (a policy created lazily for a model-less
  request, see smg/routing/policies.py) is added when the candidate list changes, so every
  candidate owns its points.

Hash: the first 8 bytes of BLAKE3, read little-endian, of the member URL followed by
``#`` and the point's index, and of the key's bytes as they are: the same ring
positions as SMG's, so a key maps to the worker SMG would choose for the same URLs
(tests/unit/test_hash_ring_smg.py checks a table recorded from SMG). The ``blake3``
package (a dependency) computes it; each member's points are computed once per process
(``_points``) and recent keys' hashes are kept (``hash64``'s bounded cache).
"""
from __future__ import annotations

from bisect import bisect_left

from blake3 import blake3 as _blake3

#: Virtual nodes per member (SMG's count): with 150 points the largest share of N members
#: stays within roughly ±10 % of 1/N (Karger et al.; the figure most rings use).
VNODES = 150

# Above one pending change per this many points, rebuild by filtering the whole array
# instead of deleting point by point (each deletion moves half the array).
_FILTER_RATIO = 16


# Keys hashed recently -> their hash; cleared when full (a client sending ever new keys
# costs one hash each, never memory).
_KEY_CACHE: dict = {}
_KEY_CACHE_MAX = 4096
# Member URL -> its points' hashes (a URL's points never change).
_POINTS: dict = {}
_POINTS_MAX = 65536


def _digest8(data: bytes) -> bytes:
    return _blake3(data).digest(8)


def hash64(data: bytes) -> int:
    """The ring position of ``data``: the first 8 bytes of BLAKE3, little-endian (the
    same in every process and as SMG's)."""
    h = _KEY_CACHE.get(data)
    if h is None:
        h = int.from_bytes(_digest8(data), "little")
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.clear()
        _KEY_CACHE[data] = h
    return h


def _points(url: str, vnodes: int) -> tuple:
    """The hashes of ``url``'s ``vnodes`` points, ``hash64(f"{url}#{i}")``."""
    key = (url, vnodes)
    pts = _POINTS.get(key)
    if pts is None:
        pts = tuple(int.from_bytes(_digest8(f"{url}#{i}".encode()), "little") for i in range(vnodes))
        if len(_POINTS) >= _POINTS_MAX:
            _POINTS.clear()
        _POINTS[key] = pts
    return pts


def _contains(hashes: list, h: int) -> bool:
    i = bisect_left(hashes, h)
    return i < len(hashes) and hashes[i] == h


class HashRing:
    __slots__ = ("vnodes", "_members", "_owner", "_hashes", "_added", "_removed", "_cands", "_clen",
                 "_by_url")

    def __init__(self, vnodes: int = VNODES) -> None:
        self.vnodes = vnodes
        self._members: dict = {}   # url -> number of registered workers with that url
        self._owner: dict = {}     # point hash -> url (the truth; _hashes follows it lazily)
        self._hashes: list = []    # sorted point hashes as of the last rebuild
        self._added: list = []     # points added since the last rebuild
        self._removed: list = []   # points removed since the last rebuild
        self._cands = None         # candidate list last seen by lookup (identity)
        self._clen = -1
        self._by_url: dict = {}    # url -> candidate worker, for _cands

    # -- membership (events) ---------------------------------------------------------------

    def add(self, url: str) -> None:
        """A worker with ``url`` joined (a second worker with the same URL only counts)."""
        n = self._members.get(url, 0)
        self._members[url] = n + 1
        if n:
            return
        owner = self._owner
        added = self._added
        for h in _points(url, self.vnodes):
            # A 64-bit collision between two points is ~n^2/2^65: the first owner keeps it.
            if h not in owner:
                owner[h] = url
                added.append(h)

    def remove(self, url: str) -> None:
        """A worker with ``url`` left; its points go when the last one with that URL does."""
        n = self._members.get(url, 0)
        if n > 1:
            self._members[url] = n - 1
            return
        if not n:
            return
        del self._members[url]
        owner = self._owner
        removed = self._removed
        for h in _points(url, self.vnodes):
            if owner.get(h) == url:
                del owner[h]
                removed.append(h)

    def members(self) -> list:
        return sorted(self._members)

    def __len__(self) -> int:
        """Points on the ring."""
        return len(self._owner)

    # -- lookup ----------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Applies the pending changes to the sorted point array: linear in the ring size
        (a full sort of 150,000 points takes ~130 ms, this ~10 ms)."""
        hashes = self._hashes
        owner = self._owner
        removed = self._removed
        if removed:
            if len(removed) * _FILTER_RATIO > len(hashes):
                hashes = [h for h in hashes if h in owner]
            else:
                for h in removed:
                    i = bisect_left(hashes, h)
                    if i < len(hashes) and hashes[i] == h and h not in owner:
                        del hashes[i]
            removed.clear()
        if self._added:
            # A point removed and re-added in one batch was deleted above; dedupe the rest.
            present = set(hashes) if len(self._added) * _FILTER_RATIO > len(hashes) else None
            new = {h for h in self._added if h in owner and (present is None or h not in present)}
            if present is None:
                new = {h for h in new if not _contains(hashes, h)}
            hashes.extend(sorted(new))
            hashes.sort()  # two sorted runs: timsort merges them in one pass
            self._added.clear()
        self._hashes = hashes

    def _view(self, workers: list) -> dict:
        by_url = self._by_url
        if workers is not self._cands or len(workers) != self._clen:
            self._cands = workers
            self._clen = len(workers)
            by_url = self._by_url = {}
            for w in workers:
                by_url.setdefault(w.url, w)
                if w.url not in self._members:
                    self.add(w.url)
        return by_url

    def lookup(self, key_hash: int, workers: list):
        """The candidate owning ``key_hash``: the first point clockwise whose member is in
        ``workers``. None only when no candidate is on the ring (``workers`` empty)."""
        by_url = self._view(workers)
        if self._added or self._removed:
            self._rebuild()
        hashes = self._hashes
        n = len(hashes)
        if not n:
            return None
        owner = self._owner
        i = bisect_left(hashes, key_hash)
        # Walk clockwise; each member is checked once per point, so at worst one full turn.
        for j in range(i, i + n):
            w = by_url.get(owner[hashes[j % n]])
            if w is not None:
                return w
        return None

    def owner_url(self, key_hash: int) -> str | None:
        """The member owning ``key_hash`` ignoring health (for tests and diagnostics)."""
        if self._added or self._removed:
            self._rebuild()
        hashes = self._hashes
        if not hashes:
            return None
        return self._owner[hashes[bisect_left(hashes, key_hash) % len(hashes)]]
