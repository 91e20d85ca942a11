"""Site: what one listener serves — the protocol's only dependency.

A gateway has two: the API listener (endpoint table, filter chains, observer) and the
Prometheus listener (one route, nothing recorded). Both are driven by the gateway's
tick, which refreshes ``now`` (the loop's coarse clock, for timeouts) and sweeps
``connections``; ``clock`` is the precise one requests are timed with.

Rules:
- ``on_head`` runs the head stage of the pipeline (request id, trace span) the moment
  a request head is parsed, so even an early answer (413, 408) carries its id.
- ``dispatch`` runs the route's filter chain, then its handler (smg/server/filters.py).
- ``request_ended`` is called by the sink exactly once per request it ends.
- ``cors`` and ``body_budget`` are read by the sink (smg/server/protocol.py); None means
  the feature is off and costs nothing.
"""
from __future__ import annotations

from smg.server import filters


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

    def dispatch(self, route, handler, conn, ctx) -> None:
        filters.run(route.chain, handler, conn, ctx, 0, self.timers, self.now + self.config.request_timeout_secs)

    def request_ended(self, ctx) -> None:
        """Every sink calls this exactly once per request, whatever way it ended: the
        filters' end hooks (permits, reservations), then the observer."""
        hooks = ctx.on_end
        if hooks is not None:
            ctx.on_end = None
            if type(hooks) is list:
                for fn in hooks:
                    fn(ctx)
            else:
                hooks(ctx)
        obs = self.observer
        if obs is not None:
            obs.request_done(ctx)

    def inflight(self) -> int:
        return sum(1 for c in self.connections if c.answering)
