"""cache_aware's closed loop (``--cache-feedback``): the radix tree corrected from the
``usage.prompt_tokens_details.cached_tokens`` each answer reports.

The tree only guesses what each engine's KV cache holds (it records where prompts were
sent); the engine says in every answer how many prompt tokens it found cached. Per
answer, on the worker that gave it (units: characters on the text tree, at
``CHARS_PER_TOKEN`` a token; tokens on the token tree):

- ``predicted``: the worker's match length in the tree when it was chosen;
- ``actual``: the reported cached tokens, in units.

Rules:
- *Evicted* (``actual < predicted * MISS_RATIO`` and short by at least
  ``MIN_GAP_TOKENS``): the engine dropped part of what the tree thinks it holds. An
  LRU engine drops its oldest entries first, so the worker's oldest holdings are
  gone too: its capacity is learned as ``tenant_size - (predicted - actual)`` (never
  above a capacity learned before) and its branch is trimmed to that, oldest first
  (``evict_tenant``). Later inserts keep it there: ``enforce`` trims the worker back to
  its capacity once it passes it by ``CAP_SLACK``.
- *Learned* (``actual > predicted`` by at least ``MIN_GAP_TOKENS``): the engine held more
  than the tree knew (another gateway's requests, or a capacity learned too small):
  the capacity grows by ``CAP_GROWTH`` and the prompt is already inserted whole.
- An answer without usage (a stream without ``include_usage``, an error) changes
  nothing; one from a worker other than the one this hook chose (a retry) neither.
- Counters per policy: answers observed, prompt, predicted and actual cached tokens,
  corrections of each kind (the ``smg_router_cache_*`` families and a log line per
  eviction interval).
- Off (the default), none of this runs: no hook is added and no usage is read.
"""
from __future__ import annotations

import logging

from smg.streaming.sse import usage_counts

log = logging.getLogger("smg.routing.cache_feedback")

MISS_RATIO = 0.5
MIN_GAP_TOKENS = 32
CAP_SLACK = 1.25
CAP_GROWTH = 1.25

_CACHED = b'"cached_tokens"'
_USAGE = b'"usage"'


def cached_tokens(data: bytes) -> int | None:
    """The ``cached_tokens`` count of the last ``usage`` object in ``data`` (a JSON body
    or the last SSE data event), or None when it names none."""
    start = data.rfind(_USAGE)
    if start < 0:
        return None
    i = data.find(_CACHED, start)
    if i < 0:
        return None
    j = i + len(_CACHED)
    n = len(data)
    while j < n and data[j] in b" \t\r\n:":
        j += 1
    e = j
    while e < n and 0x30 <= data[e] <= 0x39 and e - j < 18:
        e += 1
    return int(data[j:e]) if e > j else None


class FeedbackStats:
    __slots__ = ("answers", "prompt_tokens", "predicted_tokens", "actual_tokens", "evicted", "learned",
                 "_logged")

    def __init__(self) -> None:
        self.answers = self.prompt_tokens = self.predicted_tokens = self.actual_tokens = 0
        self.evicted = self.learned = 0
        self._logged = (0, 0, 0)

    def log_rate(self, name: str) -> None:
        """One info line with the corrections since the last one (nothing when none)."""
        a, e, le = self._logged
        da, de, dl = self.answers - a, self.evicted - e, self.learned - le
        self._logged = (self.answers, self.evicted, self.learned)
        if da and (de or dl):
            log.info("%s cache feedback: %d answers, %d evicted and %d learned corrections (%.1f%%); "
                     "predicted hit %.1f%%, actual %.1f%% overall", name, da, de, dl, 100.0 * (de + dl) / da,
                     100.0 * self.predicted_tokens / max(1, self.prompt_tokens),
                     100.0 * self.actual_tokens / max(1, self.prompt_tokens))


class Feedback:
    """The closed loop of one policy: capacities learned per worker and the counters."""

    def __init__(self) -> None:
        self.caps: dict = {}     # worker id -> learned capacity (tree units)
        self.stats = FeedbackStats()

    def forget(self, worker_id: str) -> None:
        self.caps.pop(worker_id, None)

    def enforce(self, tree, worker_id: str) -> None:
        """Keeps ``worker_id``'s holdings near its learned capacity (after an insert)."""
        cap = self.caps.get(worker_id)
        if cap is not None and tree.tenant_size(worker_id) > cap * CAP_SLACK:
            tree.evict_tenant(worker_id, int(cap))

    def correct(self, tree, worker_id: str, predicted: int, actual: int, unit: int) -> str | None:
        """Applies one answer's evidence (units); returns "evicted", "learned" or None."""
        gap = MIN_GAP_TOKENS * unit
        if actual < predicted * MISS_RATIO and predicted - actual >= gap:
            cap = max(0, tree.tenant_size(worker_id) - (predicted - actual))
            old = self.caps.get(worker_id)
            if old is not None and old < cap:
                cap = old
            self.caps[worker_id] = cap
            tree.evict_tenant(worker_id, int(cap))
            self.stats.evicted += 1
            return "evicted"
        if actual - predicted >= gap:
            cap = self.caps.get(worker_id)
            if cap is not None:
                self.caps[worker_id] = cap * CAP_GROWTH
            self.stats.learned += 1
            return "learned"
        return None


class AnswerHook:
    """An end hook (``ctx.add_end_hook``): reads the answer's usage and applies it."""

    __slots__ = ("fb", "tree", "worker", "predicted", "unit")

    def __init__(self, fb: Feedback, tree, worker, predicted: int, unit: int) -> None:
        self.fb = fb
        self.tree = tree
        self.worker = worker
        self.predicted = predicted
        self.unit = unit

    def __call__(self, ctx) -> None:
        if ctx.worker is not self.worker:
            return  # a retry went elsewhere: that attempt's own hook has the answer
        sc = ctx.scanner
        if sc is not None:
            data = sc.last_data
        else:
            parts = ctx.body_parts
            data = (parts[0] if len(parts) == 1 else b"".join(parts)) if parts else None
        if not data:
            return
        data = bytes(data)
        cached = cached_tokens(data)
        if cached is None:
            return
        counts = usage_counts(data)
        st = self.fb.stats
        st.answers += 1
        unit = self.unit
        st.prompt_tokens += counts[0] if counts else 0
        st.predicted_tokens += self.predicted // unit
        st.actual_tokens += cached
        self.fb.correct(self.tree, self.worker.id, self.predicted, cached * unit, unit)
