"""The Observer: everything recorded when a request ends, in one call per request
(metrics, the access-log line, the end of the trace span).

The protocol and the proxy exchange keep the raw facts (times, status, worker, the
SSE scanner's findings); this module turns them into bounded labels.

Cost: requests of the same shape (method, path, status, model, worker, ...) update the
same metric cells and share the same access-log labels, so everything that depends
only on the shape is resolved once and cached; a request then costs one dict lookup
plus the increments and one line format.
"""
from __future__ import annotations

from bisect import bisect_left

ENDPOINTS = {
    b"/v1/chat/completions": "chat", b"/v1/completions": "completions", b"/generate": "generate",
    b"/v1/embeddings": "embeddings", b"/v1/rerank": "rerank", b"/rerank": "rerank",
    b"/v1/messages": "messages", b"/get_model_info": "model_info", b"/get_server_info": "server_info",
}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")}

# Cached shapes are bounded: past this many the cache is cleared and rebuilt.
MAX_SHAPES = 4096

class Observer:
    __slots__ = ("gw", "metrics", "access", "tracing", "route_labels", "clock", "_access_labels")

    def __init__(self, gw, metrics, access, tracing) -> None:
        self.gw = gw
        self.metrics = metrics
        self.access = access
        self.tracing = tracing
        self.route_labels = {p: p.decode() for p in gw.routes}
        self.clock = None
        self._access_labels: dict = {}

    def request_done(self, proto, ex, status: int) -> None:
        dur = self.clock() - proto.t0
        if ex is None:
            key = (proto.method, proto.path, status, proto.error_code)
        else:
            ex.settle_usage()
            key = (proto.method, proto.path, status, proto.error_code, ex.model, ex.is_sse, ex.worker.worker_type,
                   ex.policy.name, ex.upstream_status, ex.error_type)
        m = self.metrics
        if m is not None:
            sh = m.shapes.get(key)
            if sh is None:
                sh = self._shape(m, key)
            sh.count += 1
            h = sh.dur
            h.counts[bisect_left(h.bounds, dur)] += 1
            h.sum += dur
            if ex is not None:
                if ex.ttft is not None:
                    sh.ttft.observe(ex.ttft)
                    if ex.tpot is not None:
                        sh.tpot.observe(ex.tpot)
                        sh.gen.observe(ex.gen_time)
                u = ex.usage
                if u is not None:
                    sh.tok_in += u[0]
                    sh.tok_out += u[1]
        if self.access is not None:
            akey = key if ex is None else (key, ex.worker)
            labels = self._access_labels.get(akey)
            if labels is None:
                if len(self._access_labels) >= MAX_SHAPES:
                    self._access_labels.clear()
                labels = self._access_labels[akey] = self.access.labels(
                    proto.method, proto.path, status, ex.worker.url if ex else "", ex.policy.name if ex else "",
                    (ex.model if ex else None) or "")
            self.access.record(proto.rid, labels, dur, None if ex is None else ex.ttft,
                               0 if ex is None else ex.bytes_out)
        if proto.span is not None:
            attrs = {}
            if ex is not None:
                attrs = {"smg.worker": ex.worker.url, "smg.policy": ex.policy.name, "smg.model": ex.model,
                         "smg.match_rate": getattr(ex.policy, "last_match_rate", None)}
            self.tracing.end(proto.span, status, attrs)
            proto.span = None

    def _shape(self, m, key: tuple):
        """The metric Shape for a new request shape, with its labels rendered once.

        Every label comes from a bounded set (route paths, registered models, status
        codes, fixed names), so the number of shapes is bounded too.
        """
        from smg.observability.metrics import Shape

        method_b, path_b, status, error_code = key[:4]
        labels = {"method": _METHODS.get(method_b, "other"), "path": self.route_labels.get(path_b, "unmatched"),
                  "status": str(status), "error_code": error_code or ""}
        if len(key) > 4:
            model, is_sse, worker_type, policy, upstream_status, error_type = key[4:]
            model = model or "unknown"
            endpoint = ENDPOINTS.get(path_b, "other")
            labels["rk"] = ("http", "regular", "http", model, endpoint)
            labels["tl"] = ("http", "regular", model, endpoint)
            labels["streaming"] = "true" if is_sse else "false"
            labels["selection"] = (worker_type, "http", model, policy)
            labels["upstream"] = str(upstream_status) if upstream_status else None
            if error_type is not None:
                labels["router_error"] = error_type
            elif status >= 400:
                labels["router_error"] = "upstream_" + str(status)
            else:
                labels["router_error"] = None
            labels["worker_error"] = (worker_type, "http", error_type) \
                if error_type is not None and error_type != "client_disconnected" else None
        sh = m.shapes[key] = Shape(labels, m.duration_buckets)
        return sh
