"""The ``/v1/responses`` routes: create (a turn served by the chat pipeline), retrieve,
delete, cancel and ``input_items``.

Create runs the proxied chain: auth → tenant → admission → validation (a JSON object)
→ ``prepare`` (this module's filter: the request checked, the history loaded, the
turn's chat completion put in ``ctx.body``/``ctx.raw``) → selection on the chat body →
``create``, which hands the request to the gateway's proxy handler with a ``TurnSink``
(smg/responses/turn.py) as its sink.

Rules:
- A turn's history: with ``previous_response_id``, every stored turn of the chain
  (oldest first) as its input items then its output items; with ``conversation``, the
  conversation's items in order. An id the request's tenant cannot see answers 404
  (``response_not_found`` / ``conversation_not_found``, ``param`` naming the field).
- Records belong to the tenant of the request's credential (``principal.tenant_key``;
  None without one), smg/history's visibility rule applies to every read and delete.
- ``background: true``: answered at once with the stored ``in_progress`` Response, the
  turn running on (smg/responses/background.py); cancel stops a running one, any other
  stored response answers 400 ``response_not_cancellable``.
- ``input_items`` lists the turn's input items: ``limit`` 1..100 (default 20),
  ``order`` ``asc``/``desc`` (default ``desc``), ``after`` an item id.
- A storage failure or timeout answers 503 ``storage_unavailable``.
"""
from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from smg.history import MAX_CHAIN_DEPTH, StorageUnavailable
from smg.responses import convert, mcp
from smg.responses.background import Background
from smg.responses.turn import Turn, TurnSink
from smg.server.filters import Reply
from smg.server.later import answer_later

_CHAT = b"/v1/chat/completions"
_PREFIX = len(b"/v1/responses/")
#: Conversation items a turn reads back as its history.
MAX_HISTORY_ITEMS = 1000
STORAGE_DOWN = "the history storage is unavailable"


def owner_of(ctx):
    """The tenant a record of this request belongs to (module rules)."""
    p = ctx.principal
    return p.tenant_key if p is not None else None


def query(ctx) -> dict:
    t = ctx.target
    q = t.find(b"?")
    if q < 0:
        return {}
    return {k: v[-1] for k, v in parse_qs(t[q + 1:].decode("latin-1")).items()}


def list_args(ctx, default_order: str):
    """(limit, order, after) of a list route's query, or a ``Reply``."""
    qs = query(ctx)
    try:
        limit = int(qs.get("limit", "20"))
    except ValueError:
        return Reply(400, "'limit' must be an integer", "invalid_type", param="limit")
    if not 1 <= limit <= 100:
        return Reply(400, "'limit' must be between 1 and 100", "invalid_value", param="limit")
    order = qs.get("order", default_order)
    if order not in ("asc", "desc"):
        return Reply(400, "'order' must be asc or desc", "invalid_value", param="order")
    return limit, order, qs.get("after")


def page(items: list, has_more: bool) -> bytes:
    return orjson.dumps({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                         "last_id": items[-1]["id"] if items else None, "has_more": has_more})


class ResponsesAPI:
    def __init__(self, store, proxy, op_timeout: float, max_background: int, mcp_servers=None,
                 mcp_metrics=None) -> None:
        self.store = store
        self.mcp_servers = mcp_servers   # the --mcp-config-path servers (smg/mcp/servers.py) or None
        self.mcp_metrics = mcp_metrics   # smg/responses/mcp.McpMetrics or None
        self.proxy = proxy           # Handlers.proxy: the chat pipeline after selection
        self.op_timeout = op_timeout
        self.background = Background(store, max_background)

    # -- create -------------------------------------------------------------------------

    def prepare(self, conn, ctx):
        """The filter after validation (module docstring)."""
        body = ctx.body
        try:
            convert.check(body)
        except convert.Bad as b:
            return Reply(b.status, b.message, b.code, param=b.param)
        try:
            servers = mcp.servers_of(body, self.mcp_servers,
                                     (ctx.header(b"x-smg-mcp") or b"").strip().lower() == b"enabled")
        except convert.Bad as b:
            return Reply(b.status, b.message, b.code, param=b.param)
        turn = ctx.turn = Turn(body, owner_of(ctx))
        if servers:
            turn.loop = mcp.Loop(servers, body.get("max_tool_calls"), self.mcp_metrics)
            turn.loop.again = self._again
        if turn.background and self.background.limit <= 0:
            return Reply(400, "background responses are disabled (--max-background-responses 0)",
                         "unsupported_value", param="background")
        if turn.background and self.background.full():
            return Reply(429, f"at most {self.background.limit} background responses may run at once",
                         "too_many_background_responses", param="background")
        if body.get("previous_response_id") is None and turn.conversation is None and turn.loop is None:
            self._ready(ctx, turn, [])
            return None
        return self._load(ctx, turn)

    async def _load(self, ctx, turn: Turn):
        store, body = self.store, turn.body
        try:
            prev = body.get("previous_response_id")
            history: list = []
            if prev is not None:
                chain = await store.response_chain(prev, turn.owner, MAX_CHAIN_DEPTH)
                if not chain or chain[-1]["id"] != prev:
                    return Reply(404, f"Previous response with id '{prev}' not found.", "response_not_found",
                                 param="previous_response_id")
                for rec in chain:
                    history += rec["input"]
                    history += rec["raw_response"]["output"]
            elif turn.conversation is not None:
                cid = turn.conversation
                conv = turn.conv = await store.get_conversation(cid, turn.owner)
                if conv is None:
                    return Reply(404, f"Conversation with id '{cid}' not found.", "conversation_not_found",
                                 param="conversation")
                items, _ = await store.list_items(conv, MAX_HISTORY_ITEMS, "asc", None)
                history = [it["item"] for it in items]
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        loop = turn.loop
        if loop is None:
            self._ready(ctx, turn, history)
            return None
        fns = await loop.start()
        if type(fns) is str:
            return Reply(424, fns, "mcp_list_tools_failed", param="tools")
        self._ready(ctx, turn, history, fns)
        # approved calls (mcp_approval_response items answering the chain's requests) run now
        asked = {it["id"]: it for it in history if it.get("type") == "mcp_approval_request"}
        approved = [asked[it["approval_request_id"]] for it in turn.items
                    if it.get("type") == "mcp_approval_response" and it.get("approve") is True
                    and it["approval_request_id"] in asked and asked[it["approval_request_id"]]["name"] in loop.tools]
        if approved:
            await loop.execute([{"id": convert.new_id("call_"), "name": r["name"], "arguments": r["arguments"]}
                                for r in approved], ctx.body["messages"])
            ctx.raw = orjson.dumps(ctx.body)
        return None

    def _again(self, conn, ctx, turn: Turn, events=None) -> None:
        """The MCP loop's next model call: the same pipeline, a new sink (the prompt is
        made again from the longer chat; ``events``: a streamed turn's stream goes on)."""
        ctx.prompt = None
        ctx._text = None
        self.proxy(TurnSink(conn, ctx, turn, self.store, events), ctx)

    @staticmethod
    def _ready(ctx, turn: Turn, history: list, tools: list = ()) -> None:
        chat = convert.chat_request(turn.body, history, turn.items)
        if tools:
            chat["tools"] = chat.get("tools", []) + list(tools)
        ctx.body = chat
        ctx.raw = orjson.dumps(chat)
        ctx.target = _CHAT

    def create(self, conn, ctx) -> None:
        turn = ctx.turn
        if turn.background:
            answer_later(conn, ctx, self._start_background(ctx, turn), self.op_timeout)
            return
        self.proxy(TurnSink(conn, ctx, turn, self.store), ctx)

    async def _start_background(self, ctx, turn: Turn):
        """Stores the ``in_progress`` record, starts the turn with no client, and
        answers the record."""
        if self.background.full():
            return Reply(429, f"at most {self.background.limit} background responses may run at once",
                         "too_many_background_responses", param="background")
        first = turn.response("in_progress", [])
        try:
            await turn.save(self.store, first, link=False)   # items are linked once, when it ends
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        self.proxy(TurnSink(self.background.add(turn), ctx, turn, self.store), ctx)
        return 200, orjson.dumps(first)

    # -- stored responses ---------------------------------------------------------------

    def _split(self, ctx) -> tuple:
        rest = ctx.path[_PREFIX:].decode("latin-1")
        rid, _, tail = rest.partition("/")
        return rid, tail

    def get(self, conn, ctx) -> None:
        rid, tail = self._split(ctx)
        if tail == "input_items":
            args = list_args(ctx, "desc")
            if type(args) is Reply:
                conn.reply_error(args.status, args.message, code=args.code, param=args.param)
                return
            answer_later(conn, ctx, self._input_items(rid, owner_of(ctx), *args), self.op_timeout)
        elif tail:
            conn.reply_error(404, f"no route for {ctx.path.decode('latin-1')}", code="unknown_url")
        else:
            answer_later(conn, ctx, self._get(rid, owner_of(ctx)), self.op_timeout)

    def delete(self, conn, ctx) -> None:
        rid, tail = self._split(ctx)
        if tail:
            conn.reply_error(404, f"no route for {ctx.path.decode('latin-1')}", code="unknown_url")
            return
        answer_later(conn, ctx, self._delete(rid, owner_of(ctx)), self.op_timeout)

    def cancel(self, conn, ctx) -> None:
        rid, tail = self._split(ctx)
        if tail != "cancel":
            conn.reply_error(404, f"no route for {ctx.path.decode('latin-1')}", code="unknown_url")
            return
        answer_later(conn, ctx, self._cancel(rid, owner_of(ctx)), self.op_timeout)

    @staticmethod
    def _missing(rid: str) -> Reply:
        return Reply(404, f"Response with id '{rid}' not found.", "response_not_found")

    async def _get(self, rid: str, owner):
        try:
            rec = await self.store.get_response(rid, owner)
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        if rec is None:
            return self._missing(rid)
        return 200, orjson.dumps(rec["raw_response"])

    async def _delete(self, rid: str, owner):
        try:
            ok = await self.store.delete_response(rid, owner)
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        if not ok:
            return self._missing(rid)
        return 200, orjson.dumps({"id": rid, "object": "response", "deleted": True})

    async def _cancel(self, rid: str, owner):
        try:
            rec = await self.store.get_response(rid, owner)
            if rec is None:
                return self._missing(rid)
            cancelled = await self.background.cancel(rid)
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        if cancelled is not None:
            return 200, orjson.dumps(cancelled)
        if rec["raw_response"].get("background"):
            return Reply(400, f"Cannot cancel a response that is {rec['raw_response'].get('status')}.",
                         "response_not_cancellable")
        return Reply(400, "Only background responses can be cancelled.", "response_not_cancellable")

    async def _input_items(self, rid: str, owner, limit: int, order: str, after):
        try:
            rec = await self.store.get_response(rid, owner)
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")
        if rec is None:
            return self._missing(rid)
        items = list(rec["input"]) if order == "asc" else list(reversed(rec["input"]))
        if after is not None:
            ids = [it["id"] for it in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return 200, page(items[:limit], len(items) > limit)
