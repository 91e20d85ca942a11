"""least_load: route to the worker whose engine reports the shortest expected wait; and the
load helpers every load-aware policy in smg/routing shares.

Score (SMG's formula, lower is better)::

    score(w) = (queued_tokens + inflight_tokens) / throughput + lambda * k / (1 - k)

- ``queued_tokens``: the engine's ``num_waiting_uncached_tokens``;
- ``inflight_tokens``: tokens this policy dispatched to ``w`` since the engine's last report
  (``least_load_mean_prefill_tokens`` per request: token counts are not known on the HTTP
  path), reset when a fresh report arrives;
- ``throughput``: the engine's ``gen_throughput``, or ``least_load_default_throughput``
  when it reports none (or a non-positive one);
- ``k``: the engine's ``token_usage`` (KV-cache occupancy), clamped to [0, 0.999] so the
  pressure term stays finite; ``lambda`` is ``least_load_kv_pressure_weight`` seconds.

A worker with no report while some peers report scores ``inflight * mean_prefill_tokens /
mean_reporting_throughput`` (its queue at the fleet's speed). When no candidate reports
at all, the policy is join-shortest-queue on the gateway's in-flight counts. Ties go to
fewer in flight, then fewer processed, then the earlier candidate (the tie-break SMG added
in smg#1714 so equal loads do not pile onto the first worker).

A report is *fresh* when ``worker.engine`` is a different object from the one seen at the
last dispatch to that worker. Contract with the load monitor: assign a new dict on every
poll; a dict mutated in place is never seen as fresh (its queue and KV terms are computed
once per report object and cached, which keeps a decision over 1,000 workers near 100 µs).

Shared helpers (used by cache_aware, prefix_hash, manual, bucket):

- ``least_loaded(workers)``: min by (in-flight, processed, index) in one pass;
- ``CandidateIndex``: worker id -> worker for the candidate list last seen;
- ``config_value(config, name)``: a setting from the gateway config, or the schema default
  when ``config`` is None or lacks it (unit tests pass a SimpleNamespace).

State changes go through ``record_dispatch`` so they can later be replicated as events.
"""
from __future__ import annotations

from smg.config.schema import setting
from smg.routing.policy import Policy

#: Upper clamp for KV usage in the pressure term: k/(1-k) is 999 at 0.999, so a full cache
#: costs lambda * 999 s (150 s at the default weight) instead of dividing by zero.
KV_USAGE_CAP = 0.999


def config_value(config, name: str):
    """``config.<name>``, or the default declared in smg/config/schema.py."""
    value = getattr(config, name, None) if config is not None else None
    return setting(name).default if value is None else value


def least_loaded(workers: list):
    """The candidate with the fewest in-flight requests; ties → fewer processed, then the
    earlier one. One pass; ``workers`` must be non-empty."""
    best = workers[0]
    bl = best.inflight
    bp = best.processed
    for w in workers:
        load = w.inflight
        if load < bl:
            best = w
            bl = load
            bp = w.processed
        elif load == bl:
            p = w.processed
            if p < bp:
                best = w
                bp = p
    return best


class CandidateIndex:
    """``worker id -> worker`` over the candidate list last passed to ``refresh``.

    The registry hands out one cached candidate list per model until the next membership
    or status event (smg/workers/registry.py), so list identity (plus its length, against
    callers that mutate a list in place) is a cheap change detector: the map is rebuilt
    only when the candidates change, not per request.
    """

    __slots__ = ("_list", "_len", "by_id")

    def __init__(self) -> None:
        self._list = None
        self._len = -1
        self.by_id: dict = {}

    def refresh(self, workers: list) -> bool:
        """Points the index at ``workers``; returns True when it had to be rebuilt."""
        if workers is self._list and len(workers) == self._len:
            return False
        self._list = workers
        self._len = len(workers)
        self.by_id = {w.id: w for w in workers}
        return True

    def get(self, workers: list, worker_id):
        """The candidate with id ``worker_id``, or None if it is not among ``workers``."""
        if workers is not self._list or len(workers) != self._len:
            self.refresh(workers)
        return self.by_id.get(worker_id)


class LeastLoadPolicy(Policy):
    name = "least_load"
    takes_config = True

    def __init__(self, config=None) -> None:
        self._default_tp = float(config_value(config, "least_load_default_throughput"))
        self._kv_weight = float(config_value(config, "least_load_kv_pressure_weight"))
        self._prefill = float(config_value(config, "least_load_mean_prefill_tokens"))
        # worker id -> [report seen, base score of that report (queue + KV terms), its
        # throughput, tokens dispatched since the report]. The report's terms are computed
        # once per report, not per request: a decision over 1,000 workers is then one
        # dict lookup and one multiply-add per worker.
        self._state: dict = {}

    def on_worker_removed(self, worker) -> None:
        self._state.pop(worker.id, None)

    def _fresh(self, worker, report) -> list:
        """State for ``worker``'s new ``report`` (None: no report), pending tokens zeroed."""
        if report is None:
            st = [None, 0.0, 0.0, 0.0]
        else:
            tp = report.get("gen_throughput")
            tp = float(tp) if tp and tp > 0 else self._default_tp
            k = min(max(report.get("token_usage") or 0.0, 0.0), KV_USAGE_CAP)
            queued = report.get("num_waiting_uncached_tokens") or 0
            st = [report, queued / tp + self._kv_weight * k / (1.0 - k), tp, 0.0]
        self._state[worker.id] = st
        return st

    def select(self, workers: list, request):
        state = self._state
        reporting = 0
        tp_sum = 0.0
        best = dark = None
        bs = bl = bp = dl = dp = 0
        bi = di = 0
        for i, w in enumerate(workers):
            e = w.engine
            if e is None:
                load = w.inflight
                if dark is None or load < dl or (load == dl and w.processed < dp):
                    dark = w
                    dl = load
                    dp = w.processed
                    di = i
                continue
            st = state.get(w.id)
            if st is None or st[0] is not e:
                st = self._fresh(w, e)
            tp = st[2]
            reporting += 1
            tp_sum += tp
            score = st[1] + st[3] / tp
            if best is None or score < bs or (score == bs and (w.inflight < bl or (
                    w.inflight == bl and w.processed < bp))):
                best = w
                bs = score
                bl = w.inflight
                bp = w.processed
                bi = i
        if best is None:
            chosen = dark  # fleet dark: join-shortest-queue on in-flight
        elif dark is None:
            chosen = best
        else:
            # a dark worker's queue at the reporting fleet's mean speed
            ds = dl * self._prefill * reporting / tp_sum
            chosen = dark if (ds, dl, dp, di) < (bs, bl, bp, bi) else best
        self.record_dispatch(chosen, self._prefill)
        return chosen

    def record_dispatch(self, worker, tokens: float) -> None:
        """Adds ``tokens`` to what ``worker`` has been sent since its engine's last report
        (starting from zero when the report is fresh)."""
        st = self._state.get(worker.id)
        if st is None or st[0] is not worker.engine:
            st = self._fresh(worker, worker.engine)
        st[3] += tokens
