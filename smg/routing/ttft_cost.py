"""The cost model of cache_aware's ``ttft`` mode: estimated time to first token per worker.

All costs are in *prefill tokens*: the time the engine takes to prefill that many
tokens. For one candidate::

    cost = uncached                                   # prefill of what it does not hold
         + waiting_uncached                           # engine-reported queued prefill
         + R * ahead / capacity                       # a busy batch (prefill lane, decode)
         + R * max(0, ahead + 1 - capacity) / capacity  # waiting for a slot

- ``uncached``: prompt tokens minus the worker's match length in the radix tree
  (characters / ``CHARS_PER_TOKEN`` on the text tree);
- ``ahead``: requests ahead of ours: the gateway's own in-flight count for the worker,
  or the engine's reported ``num_total_reqs`` when that is larger (other gateways);
- ``capacity``: the engine's reported ``max_running_requests``, else
  ``DEFAULT_CAPACITY`` (the priority scheduler's slots for a worker without a report);
- ``R``: ``cache_aware_request_cost_tokens``, how long one request holds its slot.

So imbalance is judged against each engine's own capacity: a single-slot engine with
one request running costs ``2R`` more than an idle one, while a 256-slot engine with
one running costs ``R/256`` more. The pure function is ``cost``; the per-report
terms are read once per report object (``report_terms``).
"""
from __future__ import annotations

#: Characters per token assumed on the text tree (prompts the gateway did not tokenize).
CHARS_PER_TOKEN = 4
#: Slots assumed for a worker whose engine reports no max_running_requests.
DEFAULT_CAPACITY = 64


def report_terms(report) -> tuple:
    """``(capacity, reported requests, reported waiting uncached tokens)`` of an engine
    load report (``worker.engine``; None when the worker has none)."""
    if not report:
        return DEFAULT_CAPACITY, 0, 0
    cap = report.get("max_running_requests") or 0
    total = report.get("num_total_reqs")
    if total is None:
        total = (report.get("num_running_reqs") or 0) + (report.get("num_waiting_reqs") or 0)
    return (cap if cap > 0 else DEFAULT_CAPACITY), total or 0, report.get("num_waiting_uncached_tokens") or 0


def cost(uncached: float, ahead: int, capacity: int, waiting_uncached: float, request_cost: float) -> float:
    """Estimated time to first token, in prefill tokens (module docstring)."""
    over = ahead + 1 - capacity
    q = request_cost * ahead / capacity
    if over > 0:
        q += request_cost * over / capacity
    return uncached + waiting_uncached + q
