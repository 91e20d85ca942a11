"""The Observer: everything recorded when a request ends, in one call per request
(metrics, the access-log line, the end of the trace span).

The protocol and the proxy exchange keep the raw facts (times, status, worker, the
SSE scanner's findings); this module turns them into bounded labels.
"""
from __future__ import annotations

import orjson

ENDPOINTS = {
    b"/v1/chat/completions": "chat", b"/v1/completions": "completions", b"/generate": "generate",
    b"/v1/embeddings": "embeddings", b"/v1/rerank": "rerank", b"/rerank": "rerank",
    b"/v1/messages": "messages", b"/get_model_info": "model_info", b"/get_server_info": "server_info",
}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")}
_STATUS = {}


def status_label(status: int) -> str:
    s = _STATUS.get(status)
    if s is None:
        s = _STATUS[status] = str(status)
    return s


def usage_of(doc) -> tuple:
    """(input tokens, output tokens) from an OpenAI/Anthropic ``usage`` or SGLang ``meta_info``."""
    if not isinstance(doc, dict):
        return None
    u = doc.get("usage")
    if not isinstance(u, dict):
        u = doc.get("meta_info")
        if not isinstance(u, dict):
            return None
    i = u.get("prompt_tokens", u.get("input_tokens"))
    o = u.get("completion_tokens", u.get("output_tokens"))
    if not isinstance(i, int) and not isinstance(o, int):
        return None
    return (i if isinstance(i, int) else 0, o if isinstance(o, int) else 0)


class Observer:
    __slots__ = ("gw", "metrics", "access", "tracing", "route_labels", "clock")

    def __init__(self, gw, metrics, access, tracing) -> None:
        self.gw = gw
        self.metrics = metrics
        self.access = access
        self.tracing = tracing
        self.route_labels = {p: p.decode() for p in gw.routes}
        self.clock = None

    def request_done(self, proto, ex, status: int) -> None:
        now = self.clock()
        dur = now - proto.t0
        m = self.metrics
        if ex is not None:
            ex.settle_usage()
        if m is not None:
            path = self.route_labels.get(proto.path, "unmatched")
            method = _METHODS.get(proto.method, "other")
            st = status_label(status)
            m.http_requests.inc((method, path))
            m.http_duration.observe((method, path), dur)
            m.http_responses.inc((path, st, proto.error_code or ""))
            if ex is not None:
                self._router(m, ex, status, st, dur)
        if self.access is not None:
            if ex is not None:
                self.access.record(proto.rid, proto.method, proto.path, status, ex.worker.url, ex.policy.name,
                                   ex.model or "", dur, ex.ttft, ex.bytes_out)
            else:
                self.access.record(proto.rid, proto.method, proto.path, status, "", "", "", dur, None, 0)
        if proto.span is not None:
            attrs = {}
            if ex is not None:
                attrs = {"smg.worker": ex.worker.url, "smg.policy": ex.policy.name, "smg.model": ex.model,
                         "smg.match_rate": getattr(ex.policy, "last_match_rate", None)}
            self.tracing.end(proto.span, status, attrs)
            proto.span = None

    def _router(self, m, ex, status: int, st: str, dur: float) -> None:
        model = ex.model or "unknown"
        endpoint = ENDPOINTS.get(ex.proto_path, "other")
        rk = ("http", "regular", "http", model, endpoint)
        m.router_requests.inc(rk + ("true" if ex.is_sse else "false",))
        m.router_duration.observe(rk, dur)
        m.selection.inc((ex.worker.worker_type, "http", model, ex.policy.name))
        if ex.upstream_status:
            m.upstream_responses.inc(("http", status_label(ex.upstream_status), ""))
        if ex.error_type is not None:
            m.router_errors.inc(rk + (ex.error_type,))
            if ex.error_type != "client_disconnected":
                m.worker_errors.inc((ex.worker.worker_type, "http", ex.error_type))
        elif status >= 400:
            m.router_errors.inc(rk + ("upstream_" + st,))
        tl = ("http", "regular", model, endpoint)
        if ex.ttft is not None:
            m.ttft.observe(tl, ex.ttft)
            if ex.tpot is not None:
                m.tpot.observe(tl, ex.tpot)
                m.generation.observe(tl, ex.gen_time)
        u = ex.usage
        if u is not None:
            if u[0]:
                m.tokens.inc(tl + ("input",), u[0])
            if u[1]:
                m.tokens.inc(tl + ("output",), u[1])


def parse_usage(data: bytes):
    try:
        return usage_of(orjson.loads(data))
    except orjson.JSONDecodeError:
        return None
