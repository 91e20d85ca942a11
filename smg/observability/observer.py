"""The Observer: everything recorded when a request ends, in one call per request
(metrics, the access-log line, the end of the trace span).

The protocol and the proxy exchange keep the raw facts (times, status, worker, the
SSE scanner's findings); this module turns them into bounded labels.

Cost: requests of the same shape (method, path, status, model, worker, ...) update the
same Tally (smg.observability.tally), which holds the shape's counters, histograms and
pre-rendered access-log labels; a request then costs one dict lookup and one Tally call
(native: histograms, TTFT/TPOT from the scanner, token usage and the access line in C).
"""
from __future__ import annotations

from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS
from smg.observability.tally import Tally
from smg.streaming.sse import usage_counts

ENDPOINTS = {
    b"/v1/chat/completions": "chat", b"/v1/completions": "completions", b"/generate": "generate",
    b"/v1/embeddings": "embeddings", b"/v1/rerank": "rerank", b"/rerank": "rerank",
    b"/v1/messages": "messages", b"/get_model_info": "model_info", b"/get_server_info": "server_info",
}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")}


class Observer:
    __slots__ = ("gw", "metrics", "access", "tracing", "route_labels", "clock", "shapes", "_buffer",
                 "_dur_bounds")

    def __init__(self, gw, metrics, access, tracing) -> None:
        self.gw = gw
        self.metrics = metrics
        self.access = access
        self.tracing = tracing
        self.route_labels = {p: p.decode() for p in gw.routes}
        self.clock = None
        # shape key -> Tally; never cleared (they hold counters), bounded by the label sets
        self.shapes: dict = metrics.shapes if metrics is not None else {}
        self._buffer = access.buffer if access is not None else None
        self._dur_bounds = metrics.duration_buckets if metrics is not None else DEFAULT_DURATION_BUCKETS

    def request_done(self, proto, ex, status: int) -> None:
        now = self.clock()
        if ex is None:
            key = (proto.method, proto.path, status, proto.error_code)
            t = self.shapes.get(key)
            if t is None:
                t = self._shape(key, "", "", "")
            t.record(now, proto.t0, proto.rid, 0, None)
        else:
            w = ex.worker
            key = (proto.method, proto.path, status, proto.error_code, ex.model, ex.is_sse, w.url, w.worker_type,
                   ex.policy.name, ex.upstream_status, ex.error_type)
            t = self.shapes.get(key)
            if t is None:
                t = self._shape(key, w.url, ex.policy.name, ex.model or "")
            sc = ex.scanner
            if sc is not None:
                ex.scanner = None
                t.record_stream(now, proto.t0, proto.rid, ex.bytes_out, sc)
            else:
                parts = ex.body_parts
                if parts:
                    ex.body_parts = None
                    t.record(now, proto.t0, proto.rid, ex.bytes_out,
                             usage_counts(parts[0] if len(parts) == 1 else b"".join(parts)))
                else:
                    t.record(now, proto.t0, proto.rid, ex.bytes_out, None)
        if proto.span is not None:
            attrs = {}
            if ex is not None:
                attrs = {"smg.worker": ex.worker.url, "smg.policy": ex.policy.name, "smg.model": ex.model,
                         "smg.match_rate": getattr(ex.policy, "last_match_rate", None)}
            self.tracing.end(proto.span, status, attrs)
            proto.span = None

    def _shape(self, key: tuple, worker: str, policy: str, model: str):
        """The Tally for a new request shape, with its labels rendered once.

        Every label comes from a bounded set (route paths, registered models, worker
        URLs, status codes, fixed names), so the number of shapes is bounded too.
        """
        method_b, path_b, status, error_code = key[:4]
        labels = {"method": _METHODS.get(method_b, "other"), "path": self.route_labels.get(path_b, "unmatched"),
                  "status": str(status), "error_code": error_code or ""}
        if len(key) > 4:
            model_l, is_sse, _url, worker_type, policy_l, upstream_status, error_type = key[4:]
            model_l = model_l or "unknown"
            endpoint = ENDPOINTS.get(path_b, "other")
            labels["rk"] = ("http", "regular", "http", model_l, endpoint)
            labels["tl"] = ("http", "regular", model_l, endpoint)
            labels["streaming"] = "true" if is_sse else "false"
            labels["selection"] = (worker_type, "http", model_l, policy_l)
            labels["upstream"] = str(upstream_status) if upstream_status else None
            if error_type is not None:
                labels["router_error"] = error_type
            elif status >= 400:
                labels["router_error"] = "upstream_" + str(status)
            else:
                labels["router_error"] = None
            labels["worker_error"] = (worker_type, "http", error_type) \
                if error_type is not None and error_type != "client_disconnected" else None
        access = self.access.labels(method_b, path_b, status, worker, policy, model) if self.access else b""
        t = self.shapes[key] = Tally(labels, self._dur_bounds, TTFT_BUCKETS, TPOT_BUCKETS, access, self._buffer)
        return t
