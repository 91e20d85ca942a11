"""The gateway's own handlers, named by the endpoint table (smg/server/endpoints.py),
and the filters every proxied request passes (body parsing and validation).

A handler is ``handler(conn, ctx)``: it answers through the connection's sink
methods, or starts an exchange that will.
"""
from __future__ import annotations

from urllib.parse import unquote

import orjson

from smg.api.validate import RERANK, RERANK_V1, VALID, json_content_type
from smg.server import rerank
from smg.server import grpc_exchange, output_parsing
from smg.server.exchange import Exchange
from smg.server.pd_exchange import PdExchange
from smg.server.filters import STOP, Reply
from smg.workers.worker import PENDING


def parse_body(conn, ctx):
    """Validation filter: the body is a JSON object its route's validator accepts
    (smg/api/validate: SMG's status, ``code`` and ``param``). The body is parsed once
    into ``ctx.body``, which is set only once it passed; a later call (the tenant rate
    limit calls this first, to read the model) finds it set and has nothing to do."""
    if ctx.body is not None:
        return None
    v = ctx.endpoint.validator
    if v is None:
        try:
            obj = orjson.loads(ctx.raw)
        except orjson.JSONDecodeError as e:
            return Reply(400, f"request body is not valid JSON: {e}", "invalid_json")
        if type(obj) is not dict:
            return Reply(400, "request body must be a JSON object", "invalid_json")
        ctx.body = obj
        return None
    ct = ctx.header(b"content-type")
    if ct is not None and not json_content_type(ct):
        # a body with no Content-Type is read as JSON; one naming another type is refused
        return _refuse(conn, ctx, v.bad_content_type)
    try:
        obj = orjson.loads(ctx.raw)
    except orjson.JSONDecodeError as e:
        return _refuse(conn, ctx, v.syntax(str(e)))
    if type(obj) is not dict:
        return _refuse(conn, ctx, v.not_object(obj))
    verdict = v.passes(obj)  # the native screen vouches for the common valid body
    if verdict != VALID:
        bad = v.check.answer(verdict, obj)
        if bad is not None:
            return _refuse(conn, ctx, bad)
    ctx.body = obj
    if v is RERANK_V1 or v is RERANK:
        rerank.prepare(ctx, v is RERANK_V1)  # the worker's request (smg/server/rerank.py)
    return None


_PLAIN = b"text/plain; charset=utf-8"


def _refuse(conn, ctx, bad):
    """The verdict on a refused body: a ``Reply`` in the route's error format, or, for
    a plain-text refusal, the answer sent here (STOP)."""
    if not bad.plain:
        return Reply(bad.status, bad.message, bad.code, param=bad.param)
    ctx.error_code = bad.code or "invalid_request"
    conn.reply(bad.status, bad.message.encode(), content_type=_PLAIN)
    return STOP


class Handlers:
    """Proxying (through the exchange) and the routes the gateway answers itself."""

    def __init__(self, deps, registry, policies, selector, state, grpc=None, pd=None) -> None:
        self.deps = deps            # ExchangeDeps
        self.pd = pd                # PdDeps (smg/server/pd_exchange.py) in prefill-decode mode, else None
        if pd is not None:
            self.proxy = self._proxy_pd   # the ordinary proxy() stays as it is when PD is off
        self.grpc = grpc            # GrpcDeps (smg/server/grpc_exchange.py): gRPC workers' requests
        self.registry = registry
        self.policies = policies
        self.selector = selector
        self.state = state          # has ``draining``
        self._info_rr = 0

    # -- proxied -------------------------------------------------------------------------

    def proxy(self, conn, ctx) -> None:
        """After the selection filter: forward to ``ctx.worker`` (retries allowed); a
        gRPC worker's request is answered by the gateway as the full server."""
        w = ctx.worker
        if w.channel is None:
            # an HTTP worker's chat answer may be parsed by the gateway (an opt-in:
            # smg/server/output_parsing.py)
            if w.parse_output and ctx.endpoint.api == "chat":
                parsers = output_parsing.for_request(ctx, self.deps.config)
                if parsers is not None:
                    Exchange(self.deps, conn, ctx, reshape=output_parsing.reshaper(parsers),
                             rewrite_stream=lambda: output_parsing.StreamParsing(parsers)).start()
                    return
            Exchange(self.deps, conn, ctx).start()
        elif grpc_exchange.supports(ctx.endpoint):
            grpc_exchange.GrpcExchange(self.grpc, conn, ctx).start()
        else:
            conn.reply_error(501, f"{ctx.path.decode()} is not served by gRPC workers", code="not_implemented")

    def _proxy_pd(self, conn, ctx) -> None:
        """``proxy`` in prefill-decode mode: a request the PD selection gave a pair goes
        to both (smg/server/pd_exchange.py); any other is an ordinary one."""
        p = ctx.prefill
        if p is None:
            Handlers.proxy(self, conn, ctx)
        elif p.channel is not None or ctx.worker.channel is not None:
            conn.reply_error(501, "prefill-decode over gRPC workers is not implemented", code="not_implemented")
        else:
            PdExchange(self.deps, self.pd, conn, ctx).start()

    def proxy_info(self, conn, ctx) -> None:
        """``/get_model_info`` and ``/get_server_info``: any ready worker, in rotation."""
        self._info_rr += 1
        worker = self.selector.any_worker(self._info_rr)
        if worker is None:
            conn.reply_error(503, "no healthy worker is available", code="no_workers")
            return
        ctx.worker = worker
        ctx.policy = self.policies.get(None)
        ctx.model_label = "unknown"
        Exchange(self.deps, conn, ctx, retries=False, routed=False).start()

    def rerank(self, conn, ctx) -> None:
        """``/rerank`` and ``/v1/rerank``: the request prepared by the validation filter
        goes to the worker's ``/v1/rerank``; its answer comes back as the gateway's
        rerank object (smg/server/rerank.py)."""
        Exchange(self.deps, conn, ctx, routed=False,
                 reshape=rerank.reshaper(ctx, ctx.endpoint.validator is RERANK_V1)).start()

    # -- gateway-owned -----------------------------------------------------------------

    def _model_cards(self) -> dict:
        """Model id -> its OpenAI model object, from every registered worker (not the
        pending ones). The worker's card fields are kept; ``object``, ``created`` and
        ``owned_by`` are the gateway's (``"model"``, 0, ``"self_hosted"``)."""
        seen: dict = {}
        for w in self.registry.all():
            if w.status == PENDING:
                continue
            for card in w.model_cards:
                if card["id"] not in seen:
                    seen[card["id"]] = {**card, "id": card["id"], "object": "model", "created": 0,
                                        "owned_by": "self_hosted"}
        return seen

    def models(self, conn, ctx) -> None:
        cards = self._model_cards()
        if not cards:
            conn.reply_error(503, "No models available", code="no_models_available")
            return
        conn.reply(200, orjson.dumps({"object": "list", "data": list(cards.values())}))

    def model(self, conn, ctx) -> None:
        """``/v1/models/{model_id}`` (the id may hold ``/``; percent-escapes decoded)."""
        model_id = unquote(ctx.path[len(b"/v1/models/"):].decode("latin-1"))
        card = self._model_cards().get(model_id)
        if card is None:
            conn.reply_error(404, f"No worker available for model '{model_id}'", code="model_not_found")
            return
        conn.reply(200, orjson.dumps(card))

    def liveness(self, conn, ctx) -> None:
        """``/health`` and ``/liveness``: the process answers, ``OK`` in plain text."""
        conn.reply(200, b"OK", content_type=_PLAIN)

    def readiness(self, conn, ctx) -> None:
        registry = self.registry
        ready = registry.ready_count()
        if self.pd is not None:
            ready += len(registry.candidates(None, "prefill")) + len(registry.candidates(None, "decode"))
        total = len(registry)
        if self.state.draining:
            status, reason = 503, "draining"
        elif self.pd is not None and not self.pd.selector.ready():
            status, reason = 503, "no healthy prefill and decode workers"
        elif ready == 0 and self.pd is None:
            status, reason = 503, "no healthy workers"
        else:
            status, reason = 200, None
        doc = {"status": "ready" if status == 200 else "not_ready", "healthy_workers": ready,
               "total_workers": total}
        if reason:
            doc["reason"] = reason
        conn.reply(status, orjson.dumps(doc))
