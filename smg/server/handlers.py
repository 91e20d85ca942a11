"""The gateway's own handlers, named by the endpoint table (smg/server/endpoints.py),
and the filters every proxied request passes (body parsing and validation).

A handler is ``handler(conn, ctx)``: it answers through the connection's sink
methods, or starts an exchange that will.
"""
from __future__ import annotations

import orjson

from smg.server.endpoints import check_required
from smg.server.exchange import Exchange
from smg.server.filters import Reply


def parse_body(conn, ctx):
    """Validation filter: the body is a JSON object with what routing needs. A body an
    earlier filter already parsed (through this function: the tenant rate limit reads
    the model) is not parsed again."""
    obj = ctx.body
    if obj is None:
        try:
            obj = orjson.loads(ctx.raw)
        except orjson.JSONDecodeError as e:
            return Reply(400, f"request body is not valid JSON: {e}", "invalid_json")
        if type(obj) is not dict:
            return Reply(400, "request body must be a JSON object", "invalid_json")
        ctx.body = obj
    err = check_required(ctx.endpoint, obj)
    if err is not None:
        return Reply(400, err)
    return None


class Handlers:
    """Proxying (through the exchange) and the routes the gateway answers itself."""

    def __init__(self, deps, registry, policies, selector, state) -> None:
        self.deps = deps            # ExchangeDeps
        self.registry = registry
        self.policies = policies
        self.selector = selector
        self.state = state          # has ``draining``
        self._info_rr = 0

    # -- proxied -------------------------------------------------------------------------

    def proxy(self, conn, ctx) -> None:
        """After the selection filter: forward to ``ctx.worker`` (retries allowed)."""
        Exchange(self.deps, conn, ctx).start()

    def proxy_info(self, conn, ctx) -> None:
        """``/get_model_info`` and ``/get_server_info``: any ready worker, in rotation."""
        self._info_rr += 1
        worker = self.selector.any_worker(self._info_rr)
        if worker is None:
            conn.reply_error(503, "no healthy worker is available", code="no_healthy_workers")
            return
        ctx.worker = worker
        ctx.policy = self.policies.get(None)
        ctx.model_label = "unknown"
        Exchange(self.deps, conn, ctx, retries=False).start()

    # -- gateway-owned -----------------------------------------------------------------

    def models(self, conn, ctx) -> None:
        seen = {}
        for w in self.registry.candidates(None, "regular"):
            for card in w.model_cards:
                seen.setdefault(card["id"], card)
        conn.reply(200, orjson.dumps({"object": "list", "data": list(seen.values())}))

    def liveness(self, conn, ctx) -> None:
        conn.reply(200, b'{"status":"ok"}')

    def readiness(self, conn, ctx) -> None:
        registry = self.registry
        ready = registry.ready_count()
        total = len(registry)
        if self.state.draining:
            status, reason = 503, "draining"
        elif ready == 0:
            status, reason = 503, "no healthy workers"
        else:
            status, reason = 200, None
        doc = {"status": "ready" if status == 200 else "not_ready", "healthy_workers": ready,
               "total_workers": total}
        if reason:
            doc["reason"] = reason
        conn.reply(status, orjson.dumps(doc))
