"""The Observer: everything recorded when a request ends, in one call per request
(metrics, the access-log line, the end of the trace span).

Every stage writes its facts into the request context (times, status, worker, the SSE
scanner's findings); this module reads them off the context alone and turns them into
bounded labels. A shape key holds only bounded values: the endpoint record (not the
client's path), a known method or ``other``, the model label selection chose
(``other`` for a model no worker names), the request's stream flag, the worker.
Which families a shape counts in, and with which values, is decided once, when the
shape is first seen (smg.observability.labels).

Cost: requests of the same shape (method, path, status, model, worker, ...) update the
same Tally (smg.observability.tally), which holds the shape's counters, histograms and
pre-rendered access-log labels; a request then costs one dict lookup and one Tally call
(native: histograms, TTFT/TPOT from the scanner, token usage and the access line in C).
"""
from __future__ import annotations

from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS
from smg.observability.labels import OTHER_PATH, exhausted, router_error, worker_error
from smg.observability.tally import Tally
from smg.streaming.sse import usage_counts
from smg.workers.retry import RETRYABLE_STATUS

_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")}


class Observer:
    __slots__ = ("metrics", "access", "tracing", "clock", "shapes", "retryable", "_buffer", "_dur_bounds")

    def __init__(self, metrics, access, tracing, clock, retryable=RETRYABLE_STATUS) -> None:
        self.metrics = metrics
        self.access = access
        self.tracing = tracing
        self.clock = clock
        # shape key -> Tally; never cleared (they hold counters), bounded by the label sets
        self.shapes: dict = metrics.shapes if metrics is not None else {}
        self.retryable = frozenset(retryable)  # statuses a retry may fix (smg_worker_retries_exhausted_total)
        self._buffer = access.buffer if access is not None else None
        self._dur_bounds = metrics.duration_buckets if metrics is not None else DEFAULT_DURATION_BUCKETS

    def request_done(self, ctx) -> None:
        """Records a finished request from its context alone (one call per request)."""
        now = self.clock()
        w = ctx.worker
        method = ctx.method
        if method not in _METHODS:
            method = b"other"
        body = ctx.body
        stream = body is not None and body.get("stream") is True  # the request's stream flag
        if w is None:
            key = (method, ctx.endpoint, ctx.status, ctx.error_code, ctx.model_label, stream)
            t = self.shapes.get(key)
            if t is None:
                t = self._shape(key, ctx, "", "")
            t.record(now, ctx.t0, ctx.rid, 0, None)
        else:
            policy = ctx.policy
            key = (method, ctx.endpoint, ctx.status, ctx.error_code, ctx.model_label, stream, w.url,
                   w.worker_type, policy.name, ctx.upstream_status, ctx.error_type)
            t = self.shapes.get(key)
            if t is None:
                t = self._shape(key, ctx, w.url, policy.name)
            sc = ctx.scanner
            if sc is not None:
                ctx.scanner = None
                t.record_stream(now, ctx.t0, ctx.rid, ctx.bytes_out, sc)
            else:
                parts = ctx.body_parts
                if parts:
                    ctx.body_parts = None
                    t.record(now, ctx.t0, ctx.rid, ctx.bytes_out,
                             usage_counts(parts[0] if len(parts) == 1 else b"".join(parts)))
                else:
                    t.record(now, ctx.t0, ctx.rid, ctx.bytes_out, None)
        if ctx.span is not None:
            attrs = {}
            if w is not None:
                attrs = {"smg.worker": w.url, "smg.policy": ctx.policy.name, "smg.model": ctx.model,
                         "smg.match_rate": getattr(ctx.policy, "last_match_rate", None)}
            self.tracing.end(ctx.span, ctx.status, attrs)
            ctx.span = None

    def _shape(self, key: tuple, ctx, worker: str, policy: str):
        """The Tally for a new request shape, with its labels rendered once.

        Every label comes from a bounded set (endpoint-table paths, ``other`` for
        methods and for paths outside it, models some worker names, worker URLs,
        status codes, fixed names), so the number of shapes is bounded too.
        """
        method_b, endpoint, status, error_code, model_l, stream = key[:6]
        path_l = endpoint.path_label or OTHER_PATH
        labels = {"method": _METHODS.get(method_b, "other"), "path": path_l,
                  "status": str(status), "error_code": error_code or ""}
        routed = len(key) > 6
        # the router families count what reached selection on a proxied route: routed
        # requests, and those selection found no worker for (no model served)
        if endpoint.proxied and (routed or model_l):
            model_l = model_l or "unknown"
            label = endpoint.label
            labels["rk"] = ("http", "regular", "http", model_l, label)
            labels["streaming"] = "true" if stream else "false"
            if not routed:
                labels["router_error"] = "no_workers"
                labels["upstream"] = ("http", str(status), error_code or "")
        if routed:
            _url, worker_type, policy_l, upstream_status, error_type = key[6:]
            w = ctx.worker  # the shape's worker (its URL is in the key)
            mode = w.connection_mode   # "http" | "grpc": SMG's router_type and connection_mode
            if mode != "http" and "rk" in labels:
                labels["rk"] = (mode, "regular", mode) + labels["rk"][3:]
            # the worker's answer decides, unless the exchange failed (then its error_type)
            answered = upstream_status if error_type is None else 0
            if endpoint.proxied:
                if status < 400:
                    labels["rkd"] = labels["rk"]  # durations: only of requests answered with success
                labels["tl"] = (mode, "regular", model_l, endpoint.label)
                labels["router_error"] = router_error(answered, error_type, stream)
                labels["upstream"] = (mode, str(upstream_status), "") if upstream_status else \
                    (mode, str(status), error_code or "")
                labels["selection"] = (worker_type, mode, model_l, policy_l)
                kind = worker_error(answered, error_type)
                labels["worker_error"] = (worker_type, mode, kind) if kind else None
                labels["exhausted"] = (worker_type, endpoint.label) \
                    if exhausted(answered, error_type, self.retryable) else None
                labels["worker"] = (w.url, w.models[0] if w.models else "unknown")
        access = self.access.labels(method_b, ctx.path if endpoint.path else b"unmatched", status, worker, policy,
                                    model_l if routed else "") if self.access else b""
        t = self.shapes[key] = Tally(labels, self._dur_bounds, TTFT_BUCKETS, TPOT_BUCKETS, access, self._buffer)
        return t
