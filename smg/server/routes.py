"""The route table: path -> {method -> handler(proto, req, body)}.

Inference routes are proxied to a worker chosen by the model's policy; the rest are
answered by the gateway itself.
"""
from __future__ import annotations

import orjson

from smg.api.validate import check
from smg.routing.text import routing_text
from smg.server.proxy import ProxyExchange

PROXIED = (b"/v1/chat/completions", b"/v1/completions", b"/generate", b"/v1/embeddings",
           b"/v1/rerank", b"/rerank", b"/v1/messages")
PROXIED_GET = (b"/get_model_info", b"/get_server_info")

class RouteRequest:
    """What a policy may look at (see smg/routing/policy.py)."""

    __slots__ = ("headers", "body", "path", "_text")

    def __init__(self, headers: list, body: dict, path: bytes) -> None:
        self.headers = headers
        self.body = body
        self.path = path
        self._text = None

    def routing_text(self) -> str:
        t = self._text
        if t is None:
            t = self._text = routing_text(self.path, self.body)
        return t

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class Handlers:
    def __init__(self, gw) -> None:
        self.gw = gw
        self._info_rr = 0

    def table(self) -> dict:
        t: dict = {p: {b"POST": self.proxy} for p in PROXIED}
        for p in PROXIED_GET:
            t[p] = {b"GET": self.proxy_get}
        t[b"/v1/models"] = {b"GET": self.models}
        t[b"/health"] = {b"GET": self.liveness}
        t[b"/liveness"] = {b"GET": self.liveness}
        t[b"/readiness"] = {b"GET": self.readiness}
        return t

    # -- proxied -------------------------------------------------------------------------

    def proxy(self, proto, req, body: bytes) -> None:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            proto.reply_error(400, f"request body is not valid JSON: {e}", code="invalid_json")
            return
        if type(obj) is not dict:
            proto.reply_error(400, "request body must be a JSON object", code="invalid_json")
            return
        path = proto.path
        err = check(path, obj)
        if err is not None:
            proto.reply_error(400, err)
            return
        gw = self.gw
        model = obj.get("model")
        workers = gw.registry.candidates(model) or gw.registry.fallback(model)
        if not workers:
            if model is not None and len(gw.registry) and not gw.registry.knows_model(model):
                proto.reply_error(404, f"model '{model}' is not served by any worker", code="model_not_found")
            else:
                proto.reply_error(503, "no healthy worker is available", code="no_healthy_workers")
            return
        policy = gw.policies.get(model)
        rreq = RouteRequest(req.headers, obj, path)
        worker = policy.select(workers, rreq)
        if worker is None:
            proto.reply_error(503, f"policy {policy.name} selected no worker", code="no_worker_selected")
            return
        ProxyExchange(gw, proto, worker, policy, req, body, rreq, model).start()

    def proxy_get(self, proto, req, body: bytes) -> None:
        workers = self.gw.registry.candidates(None)
        if not workers:
            proto.reply_error(503, "no healthy worker is available", code="no_healthy_workers")
            return
        self._info_rr += 1
        worker = workers[self._info_rr % len(workers)]
        ProxyExchange(self.gw, proto, worker, self.gw.policies.get(None), req, b"").start()

    # -- gateway-owned -----------------------------------------------------------------

    def models(self, proto, req, body: bytes) -> None:
        seen = {}
        for w in self.gw.registry.candidates(None):
            for card in w.model_cards:
                seen.setdefault(card["id"], card)
        proto.respond(200, orjson.dumps({"object": "list", "data": list(seen.values())}))

    def liveness(self, proto, req, body: bytes) -> None:
        proto.respond(200, b'{"status":"ok"}')

    def readiness(self, proto, req, body: bytes) -> None:
        gw = self.gw
        ready = gw.registry.ready_count()
        total = len(gw.registry)
        if gw.draining:
            status, reason = 503, "draining"
        elif ready == 0:
            status, reason = 503, "no healthy workers"
        else:
            status, reason = 200, None
        doc = {"status": "ready" if status == 200 else "not_ready", "healthy_workers": ready,
               "total_workers": total}
        if reason:
            doc["reason"] = reason
        proto.respond(status, orjson.dumps(doc))
