"""Site: what one listener serves — the protocol's only dependency.

A gateway has two: the API listener (endpoint table, filter chains, observer) and the
Prometheus listener (one route, nothing recorded). Both are driven by the gateway's
tick, which refreshes ``now`` (the loop's coarse clock, for timeouts) and sweeps
``connections``; ``clock`` is the precise one requests are timed with.

Rules:
- ``on_head`` runs the head stage of the pipeline (request id, trace span) the moment
  a request head is parsed, so even an early answer (413, 408) carries its id.
- ``serve`` answers a complete request from any sink (HTTP/1.1 connection, HTTP/2
  stream): 404/405 and CORS preflights, else the route's filter chain, then its handler
  (smg/server/filters.py).
- ``request_ended`` is called by the sink exactly once per request it ends.
- ``cors`` and ``body_budget`` are read by the sink (smg/server/protocol.py); None means
  the feature is off and costs nothing.
"""
from __future__ import annotations

import logging

from smg.server import filters
from smg.server.cors import REFUSED

log = logging.getLogger("smg.server")

_OPTIONS = b"OPTIONS"


class Site:
    __slots__ = ("config", "routes", "connections", "observer", "tracing", "request_ids", "timers", "clock",
                 "now", "draining", "cors", "body_budget")

    def __init__(self, config, routes, request_ids, clock, timers=None, observer=None, tracing=None) -> None:
        self.config = config
        self.routes = routes            # smg.server.endpoints.RouteTable
        self.connections: set = set()
        self.observer = observer
        self.tracing = tracing
        self.request_ids = request_ids  # smg.api.request_id.RequestIds
        self.timers = timers
        self.clock = clock
        self.now = 0.0
        self.draining = False
        self.cors = None                # smg.server.cors.CorsPolicy; None: CORS off
        self.body_budget = None         # smg.server.body_budget.BodyBudget; None: bodies not counted

    def on_head(self, ctx) -> None:
        self.request_ids.assign(ctx)
        if self.tracing is not None:
            ctx.span = self.tracing.start(ctx.method, ctx.path, ctx.headers, ctx.rid)

    def serve(self, sink, route, ctx) -> None:
        """A complete request (its body in ``ctx.raw``) from any sink: 404 for no route
        (``route`` False), 405 for a method the route lacks — a CORS preflight first, on
        both — else the route's filter chain and handler. A handler or filter that raises
        is answered by the sink (``handler_failed``), never by the process going down."""
        try:
            handler = route.handlers.get(ctx.method) if route is not False else None
            if handler is None:
                if ctx.method == _OPTIONS and self.cors is not None and self._preflight(sink, ctx):
                    return
                if route is False:
                    sink.reply_error(404, f"no route for {ctx.path.decode('latin-1')}", code="unknown_url")
                else:
                    sink.reply_error(405, f"method {ctx.method.decode('latin-1')} not allowed",
                                     extra=[(b"allow", route.allow)])
                return
            filters.run(route.chain, handler, sink, ctx, 0, self.timers, self.now + self.config.request_timeout_secs)
        except Exception:  # a bug in a handler must not take the process down
            log.exception("handler failed for %s (request id %s)", ctx.path, ctx.rid.decode())
            sink.handler_failed()

    def _preflight(self, sink, ctx) -> bool:
        """Answers a CORS preflight; False when the OPTIONS request is not one."""
        answer = self.cors.preflight(ctx.headers)
        if answer is None:
            return False
        if answer is REFUSED:
            sink.reply_error(403, "origin not allowed by the gateway's CORS policy (--cors-allowed-origins)",
                             code="cors_origin_not_allowed")
        else:
            sink.reply(200, b"", answer, content_type=b"text/plain; charset=utf-8")
        return True

    def request_ended(self, ctx) -> None:
        """Every sink calls this exactly once per request, whatever way it ended: the
        filters' end hooks (permits, reservations), then the observer. A hook that
        raises is logged and the others still run (a permit is never lost to another
        stage's bug); the observer runs either way."""
        hooks = ctx.on_end
        if hooks is not None:
            ctx.on_end = None
            if type(hooks) is list:
                i = 0
                n = len(hooks)
                while i < n:
                    try:  # one try around the loop: entering it costs nothing
                        while i < n:
                            fn = hooks[i]
                            i += 1
                            fn(ctx)
                    except Exception:
                        _hook_failed(fn, ctx)
            else:
                try:
                    hooks(ctx)
                except Exception:
                    _hook_failed(hooks, ctx)
        obs = self.observer
        if obs is not None:
            obs.request_done(ctx)

    def inflight(self) -> int:
        return sum(1 for c in self.connections if c.answering)


def _hook_failed(fn, ctx) -> None:
    log.exception("an end hook (%r) failed for %s (request id %s)", fn, ctx.path, ctx.rid.decode("latin-1"))
