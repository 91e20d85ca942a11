"""bucket: length-bucketed routing (SMG's prefill policy for PD): each worker owns a range of
request lengths, so short and long prompts do not queue behind each other, and the ranges
follow the observed length distribution.

State per model:

- boundaries: worker ``i`` (in registration order) owns lengths ``[starts[i], starts[i+1])``;
  the last range is open-ended. Initially ``[0, L_MAX)`` is split evenly (``gap = L_MAX //
  N``), and again whenever membership changes.
- a sliding window of the requests of the last ``bucket_adjust_interval_secs``: (time,
  worker, length in characters), and per worker the characters it was sent in the window.

Per request (length = characters of the routing text):

1. Imbalance: ``max_chars - min_chars > balance_abs_threshold`` AND ``max_chars >
   balance_rel_threshold * min_chars`` over the candidates' windowed characters → the
   candidate with the fewest (ties → fewer in flight, then the earlier one).
2. Otherwise the owner of the length's range (binary search); if the owner is not a
   candidate, the fewest-characters candidate (SMG picks a random worker there).
3. The request is added to the window.

``maintain(now)`` expires the window and, every ``bucket_adjust_interval_secs``,
recomputes the boundaries from the sorted window lengths so that each range carries about
``total / N`` characters: ranges are cut where the running sum of a range first reaches the
target; a range whose cut would not be above its start gets width ``target`` (SMG's rule,
so one very common length cannot make an empty range); ranges left without data get width
``target`` too, and the last is open-ended. Boundaries are recomputed only when the
per-range load moved by more than 2x since the last recompute (or none was made).

Time: no clock is read; window entries carry the ``now`` of the latest ``maintain`` (the
gateway's 0.5 s sweep), so the window is exact to that resolution.

Deliberately different from SMG: re-splitting on membership change always uses ``[0,
L_MAX)`` (SMG's re-split after the first one divides ``usize::MAX``, making every range
but the first astronomically wide), and windowed loads survive a membership change.

State changes only through ``record``, ``set_boundaries`` (via ``adjust_boundaries`` /
``reset_boundaries``) and ``expire`` (to be replicated as events).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import pairwise

from smg.routing.least_load import CandidateIndex, config_value
from smg.routing.policy import Policy

#: Length range split evenly at start (SMG's ``l_max``): 4,096 characters, about 1,000
#: tokens, the middle of typical chat prompt lengths.
L_MAX = 4096
#: Recompute boundaries only when the per-range target moved by more than this factor
#: (SMG's hysteresis, so boundaries do not chase noise).
ADJUST_FACTOR = 2


class BucketPolicy(Policy):
    name = "bucket"
    takes_config = True
    needs_text = True

    def __init__(self, config=None) -> None:
        self.abs_threshold = config_value(config, "balance_abs_threshold")
        self.rel_threshold = float(config_value(config, "balance_rel_threshold"))
        self.window_secs = float(config_value(config, "bucket_adjust_interval_secs"))
        self.order: list = []          # worker ids; range i belongs to order[i]
        self.starts: list = []         # ascending range starts, starts[0] == 0
        self._window: deque = deque()  # (stamp, worker id, chars), oldest first
        self._chars: dict = {}         # worker id -> chars in the window
        self.total_chars = 0
        self.range_load = 0            # per-range target at the last recompute (0: none yet)
        self._now = None
        self._next_adjust = None
        self._index = CandidateIndex()

    # -- selection -------------------------------------------------------------------------

    def select(self, workers: list, request):
        index = self._index
        if index.refresh(workers):
            for w in workers:  # a lazily created policy learns its members here
                if w.id not in self._chars:
                    self.on_worker_added(w)
        n = len(request.routing_text())
        chars = self._chars
        best = workers[0]
        lo = hi = chars.get(best.id, 0)
        bl = best.inflight
        for w in workers:
            c = chars.get(w.id, 0)
            if c < lo or (c == lo and w.inflight < bl):
                best = w
                lo = c
                bl = w.inflight
            if c > hi:
                hi = c
        chosen = best
        if not (hi - lo > self.abs_threshold and hi > self.rel_threshold * lo) and self.starts:
            owner = index.by_id.get(self.order[bisect_right(self.starts, n) - 1])
            if owner is not None:
                chosen = owner
        self.record(chosen.id, n)
        return chosen

    def owner_of(self, length: int) -> str | None:
        """The worker id owning ``length``'s range (None without workers)."""
        return self.order[bisect_right(self.starts, length) - 1] if self.starts else None

    # -- state changes ---------------------------------------------------------------------

    def record(self, worker_id: str, chars: int) -> None:
        """``worker_id`` was sent a request of ``chars`` characters now."""
        self._window.append((self._now, worker_id, chars))
        self._chars[worker_id] = self._chars.get(worker_id, 0) + chars
        self.total_chars += chars

    def expire(self, now: float) -> None:
        """Drops window entries older than ``bucket_adjust_interval_secs`` before ``now``."""
        window = self._window
        cutoff = now - self.window_secs
        chars = self._chars
        while window:
            stamp, wid, n = window[0]
            if stamp is None or stamp >= cutoff:  # None: recorded before the first maintain()
                break
            window.popleft()
            self.total_chars -= n
            c = chars.get(wid)
            if c is not None:
                chars[wid] = c - n

    def set_boundaries(self, starts: list) -> None:
        """Installs range starts (one per worker in ``order``, ascending, first 0)."""
        if len(starts) != len(self.order) or (starts and starts[0] != 0) or any(
                b <= a for a, b in pairwise(starts)):
            raise ValueError(f"bad boundaries {starts!r} for {len(self.order)} workers")
        self.starts = list(starts)

    def reset_boundaries(self) -> None:
        """Splits ``[0, L_MAX)`` evenly over the workers (the last range open-ended)."""
        n = len(self.order)
        gap = max(L_MAX // n, 1) if n else 0
        self.set_boundaries([i * gap for i in range(n)])
        self.range_load = 0

    def adjust_boundaries(self) -> bool:
        """Recomputes the ranges from the window (module docstring); returns True if it did."""
        n = len(self.order)
        if not n or not self._window:
            return False
        target = self.total_chars // n
        old = self.range_load
        if old and target <= ADJUST_FACTOR * old and old <= ADJUST_FACTOR * target:
            return False
        self.range_load = target
        lengths = sorted(e[2] for e in self._window)
        starts = [0]
        lower = 0
        j = 0
        m = len(lengths)
        for _ in range(n - 1):
            acc = 0
            cut = None
            while j < m:
                acc += lengths[j]
                j += 1
                if acc >= target:
                    cut = lengths[j - 1]
                    break
            upper = cut if cut is not None and cut > lower else lower + target
            lower = upper + 1
            starts.append(lower)
        self.set_boundaries(starts)
        return True

    # -- events ------------------------------------------------------------------------------

    def on_worker_added(self, worker) -> None:
        if worker.id in self._chars:
            return
        self.order.append(worker.id)
        self._chars[worker.id] = 0
        self.reset_boundaries()

    def on_worker_removed(self, worker) -> None:
        if worker.id not in self._chars:
            return
        self.order.remove(worker.id)
        del self._chars[worker.id]
        self.reset_boundaries()

    def maintain(self, now: float) -> None:
        if self._now is None:
            self._window = deque((now, wid, n) for _, wid, n in self._window)
            self._next_adjust = now + self.window_secs
        self._now = now
        self.expire(now)
        if now >= self._next_adjust:
            self._next_adjust = now + self.window_secs
            self.adjust_boundaries()

    def loads(self) -> dict:
        """Diagnostic snapshot: worker id -> characters in the window."""
        return dict(self._chars)
