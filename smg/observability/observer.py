"""The Observer: everything recorded when a request ends, in one call per request
(metrics, the access-log line, the end of the trace span).

The protocol and the proxy exchange keep the raw facts (times, status, worker, the
SSE scanner's findings); this module turns them into bounded labels.

Cost: requests of the same shape (method, path, status, ...) update the same metric
cells, so each shape's cells are resolved once and cached; a request then costs one
dict lookup per layer plus the increments.
"""
from __future__ import annotations

import orjson

ENDPOINTS = {
    b"/v1/chat/completions": "chat", b"/v1/completions": "completions", b"/generate": "generate",
    b"/v1/embeddings": "embeddings", b"/v1/rerank": "rerank", b"/rerank": "rerank",
    b"/v1/messages": "messages", b"/get_model_info": "model_info", b"/get_server_info": "server_info",
}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")}

# Cached cell tuples are bounded: past this many shapes the caches are cleared and rebuilt.
MAX_SHAPES = 4096


def usage_of(doc) -> tuple | None:
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


def parse_usage(data: bytes):
    try:
        return usage_of(orjson.loads(data))
    except orjson.JSONDecodeError:
        return None


class Observer:
    __slots__ = ("gw", "metrics", "access", "tracing", "route_labels", "clock", "_http", "_router")

    def __init__(self, gw, metrics, access, tracing) -> None:
        self.gw = gw
        self.metrics = metrics
        self.access = access
        self.tracing = tracing
        self.route_labels = {p: p.decode() for p in gw.routes}
        self.clock = None
        self._http: dict = {}
        self._router: dict = {}

    def request_done(self, proto, ex, status: int) -> None:
        dur = self.clock() - proto.t0
        if ex is not None:
            ex.settle_usage()
        m = self.metrics
        if m is not None:
            key = (proto.method, proto.path, status, proto.error_code)
            cells = self._http.get(key)
            if cells is None:
                cells = self._http_cells(m, key)
            cells[0][0] += 1
            cells[1].observe(dur)
            cells[2][0] += 1
            if ex is not None:
                self._router_done(m, ex, status, dur)
        if self.access is not None:
            if ex is not None:
                self.access.record(proto.rid, proto.method, proto.path, status, ex.worker.url, ex.policy.name,
                                   ex.model, dur, ex.ttft, ex.bytes_out)
            else:
                self.access.record(proto.rid, proto.method, proto.path, status, "", "", None, dur, None, 0)
        if proto.span is not None:
            attrs = {}
            if ex is not None:
                attrs = {"smg.worker": ex.worker.url, "smg.policy": ex.policy.name, "smg.model": ex.model,
                         "smg.match_rate": getattr(ex.policy, "last_match_rate", None)}
            self.tracing.end(proto.span, status, attrs)
            proto.span = None

    def _http_cells(self, m, key: tuple) -> tuple:
        method, path, status, error_code = key
        method = _METHODS.get(method, "other")
        path = self.route_labels.get(path, "unmatched")
        cells = (m.http_requests.cell((method, path)), m.http_duration.cell((method, path)),
                 m.http_responses.cell((path, str(status), error_code or "")))
        if len(self._http) >= MAX_SHAPES:
            self._http.clear()
        self._http[key] = cells
        return cells

    def _router_done(self, m, ex, status: int, dur: float) -> None:
        key = (ex.model, ex.proto_path, ex.is_sse, ex.worker.worker_type, ex.policy.name, ex.upstream_status,
               ex.error_type, status)
        c = self._router.get(key)
        if c is None:
            c = self._router_cells(m, key)
        req, rdur, sel, up, err, werr, ttft, tpot, gen, tin, tout = c
        req[0] += 1
        rdur.observe(dur)
        sel[0] += 1
        if up is not None:
            up[0] += 1
        if err is not None:
            err[0] += 1
        if werr is not None:
            werr[0] += 1
        if ex.ttft is not None:
            ttft.observe(ex.ttft)
            if ex.tpot is not None:
                tpot.observe(ex.tpot)
                gen.observe(ex.gen_time)
        u = ex.usage
        if u is not None:
            tin[0] += u[0]
            tout[0] += u[1]

    def _router_cells(self, m, key: tuple) -> tuple:
        model, path, is_sse, worker_type, policy, upstream_status, error_type, status = key
        model = model or "unknown"
        endpoint = ENDPOINTS.get(path, "other")
        rk = ("http", "regular", "http", model, endpoint)
        tl = ("http", "regular", model, endpoint)
        if error_type is not None:
            err = m.router_errors.cell(rk + (error_type,))
        elif status >= 400:
            err = m.router_errors.cell(rk + ("upstream_" + str(status),))
        else:
            err = None
        werr = m.worker_errors.cell((worker_type, "http", error_type)) \
            if error_type is not None and error_type != "client_disconnected" else None
        cells = (m.router_requests.cell(rk + ("true" if is_sse else "false",)), m.router_duration.cell(rk),
                 m.selection.cell((worker_type, "http", model, policy)),
                 m.upstream_responses.cell(("http", str(upstream_status), "")) if upstream_status else None,
                 err, werr, m.ttft.cell(tl), m.tpot.cell(tl), m.generation.cell(tl),
                 m.tokens.cell(tl + ("input",)), m.tokens.cell(tl + ("output",)))
        if len(self._router) >= MAX_SHAPES:
            self._router.clear()
        self._router[key] = cells
        return cells
