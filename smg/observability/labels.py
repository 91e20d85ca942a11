"""Bounded label values of the metric families, decided once per request shape (or
per retried attempt), never per request.

Rules:
- Each function maps facts the request context holds (the worker's answer status,
  the exchange's ``error_type``, which is a transport error kind from smg.errors or a
  fixed name the exchange sets) to one of a fixed set of label values, or None for
  "not counted in this family".
- The values are SMG's (its HTTP router's): router ``error_type`` of
  ``validation_error``, ``no_workers``, ``backend_error``, ``internal_error``; worker
  ``error_type`` of ``backend_error`` or ``timeout``.
"""
from __future__ import annotations

# The ``path`` label of requests outside the endpoint table.
OTHER_PATH = "other"

# Worker answer status -> the router's error_type (statuses not listed count no router
# error: the retryable ones, and the rest of 5xx); other 4xx are ``internal_error``.
_ROUTER_ERRORS = {400: "validation_error", 404: "no_workers", 500: "backend_error"}
# Transport failures (smg.errors kinds) counted as worker timeouts; the rest are
# ``backend_error``.
_TIMEOUT_KINDS = frozenset(("connect_timeout", "upstream_timeout"))
# error_type values that are nobody's failure.
_NOT_WORKER = frozenset(("client_disconnected", "scheduler_preempted", "no_healthy_workers"))


def router_error(status: int, error_type, stream: bool):
    """``error_type`` of smg_router_request_errors_total for a routed request: from the
    worker's answer ``status`` (0: the gateway answered), or from the exchange's
    ``error_type`` (an answer cut off mid-way counts when the request was not
    streamed); None: no router error."""
    if status:
        if status in _ROUTER_ERRORS:
            return _ROUTER_ERRORS[status]
        if 400 < status < 500 and status not in (408, 429):
            return "internal_error"
        return None
    if error_type == "upstream_closed_mid_response" and not stream:
        return "backend_error"
    return None


def worker_error(status: int, error_type):
    """``error_type`` of smg_worker_errors_total for one attempt: ``timeout`` (a 504
    answer or a timed-out attempt), ``backend_error`` (another 5xx answer, a transport
    failure); None when the worker did not fail."""
    if status:
        if status == 504:
            return "timeout"
        return "backend_error" if status >= 500 else None
    if error_type is None or error_type in _NOT_WORKER:
        return None
    return "timeout" if error_type in _TIMEOUT_KINDS else "backend_error"


def exhausted(status: int, error_type, retryable) -> bool:
    """The request ended on a failure a retry could have fixed (a retryable answer, a
    transport failure that was not a timeout): it ran out of attempts."""
    if status:
        return status in retryable
    return error_type is not None and error_type not in _NOT_WORKER and error_type not in _TIMEOUT_KINDS \
        and error_type != "upstream_closed_mid_response"
