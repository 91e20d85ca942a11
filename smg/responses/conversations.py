"""The ``/v1/conversations`` routes (SMG's nine): create, retrieve, update metadata,
delete; items list, add, retrieve, delete.

Rules:
- A conversation is ``{"id": "conv_...", "object": "conversation", "created_at",
  "metadata"}``; ``metadata`` holds at most 16 string values.
- ``POST /v1/conversations`` may carry ``items`` (at most 20), added as by the items
  route. ``POST /v1/conversations/{id}/items`` takes ``{"items": [...]}``, 1..20 per
  call; an item ``{"type": "item_reference", "id": ...}`` links an item that already
  exists (one the tenant can see), so an item can be in several conversations.
- Items list: ``limit`` 1..100 (default 20), ``order`` (default ``desc``), ``after``.
- Deleting an item unlinks it from this conversation and answers the conversation.
- Unknown ids, and ids of another tenant's records, answer 404
  (``conversation_not_found``, ``item_not_found``); a storage failure 503
  ``storage_unavailable``. Records belong to the request's tenant
  (smg/responses/api.py ``owner_of``).
"""
from __future__ import annotations

import time

import orjson

from smg.history import StorageUnavailable
from smg.responses import convert
from smg.responses.api import STORAGE_DOWN, list_args, owner_of, page
from smg.responses.turn import item_record
from smg.server.filters import Reply
from smg.server.later import answer_later

MAX_ITEMS_PER_CALL = 20
_PREFIX = len(b"/v1/conversations/")


def _public(rec: dict) -> dict:
    return {"id": rec["id"], "object": "conversation", "created_at": rec["created_at"],
            "metadata": rec.get("metadata") or {}}


def _body(ctx):
    """The request's JSON object (an empty body is ``{}``), or a ``Reply``."""
    if not ctx.raw:
        return {}
    try:
        obj = orjson.loads(ctx.raw)
    except orjson.JSONDecodeError as e:
        return Reply(400, f"request body is not valid JSON: {e}", "invalid_json")
    if type(obj) is not dict:
        return Reply(400, "request body must be a JSON object", "invalid_json")
    return obj


def _items_of(obj: dict, required: bool):
    """The checked ``items`` of a request body, or a ``Reply``."""
    items = obj.get("items")
    if items is None and not required:
        return []
    if type(items) is not list or (required and not items):
        return Reply(400, "'items' must be a non-empty list", "invalid_value", param="items")
    if len(items) > MAX_ITEMS_PER_CALL:
        return Reply(400, f"at most {MAX_ITEMS_PER_CALL} items may be added at once", "array_above_max_length",
                     param="items")
    for i, it in enumerate(items):
        if type(it) is dict and it.get("type") == "item_reference":
            if type(it.get("id")) is not str:
                return Reply(400, "an item_reference needs an 'id'", "missing_required_parameter",
                             param=f"items[{i}].id")
            continue
        try:
            convert.check_item(it, f"items[{i}]")
        except convert.Bad as b:
            return Reply(b.status, b.message, b.code, param=b.param)
    return items


class ConversationsAPI:
    def __init__(self, store, op_timeout: float) -> None:
        self.store = store
        self.op_timeout = op_timeout

    def _later(self, conn, ctx, coro) -> None:
        answer_later(conn, ctx, self._guard(coro), self.op_timeout)

    @staticmethod
    async def _guard(coro):
        try:
            return await coro
        except StorageUnavailable:
            return Reply(503, STORAGE_DOWN, "storage_unavailable")

    @staticmethod
    def _refuse(conn, r: Reply) -> None:
        conn.reply_error(r.status, r.message, code=r.code, param=r.param)

    @staticmethod
    def _no_conversation(cid: str) -> Reply:
        return Reply(404, f"Conversation with id '{cid}' not found.", "conversation_not_found")

    def _split(self, ctx) -> list:
        return ctx.path[_PREFIX:].decode("latin-1").split("/")

    # -- routes -------------------------------------------------------------------------

    def create(self, conn, ctx) -> None:
        obj = _body(ctx)
        if type(obj) is Reply:
            return self._refuse(conn, obj)
        try:
            convert.check_metadata(obj.get("metadata"))
        except convert.Bad as b:
            return self._refuse(conn, Reply(b.status, b.message, b.code, param=b.param))
        items = _items_of(obj, False)
        if type(items) is Reply:
            return self._refuse(conn, items)
        self._later(conn, ctx, self._create(owner_of(ctx), obj.get("metadata") or {}, items))

    async def _create(self, owner, metadata: dict, items: list):
        rec = {"id": convert.new_id("conv_"), "owner": owner, "created_at": int(time.time()), "metadata": metadata}
        await self.store.create_conversation(rec)
        if items:
            added = await self._add(rec, owner, items)
            if type(added) is Reply:
                return added
        return 200, orjson.dumps(_public(rec))

    def get(self, conn, ctx) -> None:
        parts = self._split(ctx)
        owner = owner_of(ctx)
        if len(parts) == 1:
            self._later(conn, ctx, self._get(parts[0], owner))
        elif len(parts) == 2 and parts[1] == "items":
            args = list_args(ctx, "desc")
            if type(args) is Reply:
                return self._refuse(conn, args)
            self._later(conn, ctx, self._list(parts[0], owner, *args))
        elif len(parts) == 3 and parts[1] == "items":
            self._later(conn, ctx, self._item(parts[0], parts[2], owner))
        else:
            self._unknown(conn, ctx)

    def post(self, conn, ctx) -> None:
        parts = self._split(ctx)
        obj = _body(ctx)
        if type(obj) is Reply:
            return self._refuse(conn, obj)
        owner = owner_of(ctx)
        if len(parts) == 1:
            if "metadata" not in obj:
                return self._refuse(conn, Reply(400, "'metadata' is required", "missing_required_parameter",
                                                param="metadata"))
            try:
                convert.check_metadata(obj["metadata"])
            except convert.Bad as b:
                return self._refuse(conn, Reply(b.status, b.message, b.code, param=b.param))
            self._later(conn, ctx, self._update(parts[0], owner, obj["metadata"] or {}))
        elif len(parts) == 2 and parts[1] == "items":
            items = _items_of(obj, True)
            if type(items) is Reply:
                return self._refuse(conn, items)
            self._later(conn, ctx, self._add_items(parts[0], owner, items))
        else:
            self._unknown(conn, ctx)

    def delete(self, conn, ctx) -> None:
        parts = self._split(ctx)
        owner = owner_of(ctx)
        if len(parts) == 1:
            self._later(conn, ctx, self._delete(parts[0], owner))
        elif len(parts) == 3 and parts[1] == "items":
            self._later(conn, ctx, self._delete_item(parts[0], parts[2], owner))
        else:
            self._unknown(conn, ctx)

    @staticmethod
    def _unknown(conn, ctx) -> None:
        conn.reply_error(404, f"no route for {ctx.path.decode('latin-1')}", code="unknown_url")

    # -- the operations -----------------------------------------------------------------

    async def _get(self, cid: str, owner):
        rec = await self.store.get_conversation(cid, owner)
        return (200, orjson.dumps(_public(rec))) if rec is not None else self._no_conversation(cid)

    async def _update(self, cid: str, owner, metadata: dict):
        rec = await self.store.update_conversation(cid, owner, metadata)
        return (200, orjson.dumps(_public(rec))) if rec is not None else self._no_conversation(cid)

    async def _delete(self, cid: str, owner):
        if not await self.store.delete_conversation(cid, owner):
            return self._no_conversation(cid)
        return 200, orjson.dumps({"id": cid, "object": "conversation.deleted", "deleted": True})

    async def _list(self, cid: str, owner, limit: int, order: str, after):
        conv = await self.store.get_conversation(cid, owner)
        if conv is None:
            return self._no_conversation(cid)
        items, more = await self.store.list_items(conv, limit, order, after)
        return 200, page([it["item"] for it in items], more)

    async def _item(self, cid: str, iid: str, owner):
        conv = await self.store.get_conversation(cid, owner)
        if conv is None:
            return self._no_conversation(cid)
        rec = await self.store.get_item(iid, owner)
        if rec is None or not await self.store.is_linked(conv, rec):
            return Reply(404, f"Item with id '{iid}' not found.", "item_not_found")
        return 200, orjson.dumps(rec["item"])

    async def _delete_item(self, cid: str, iid: str, owner):
        conv = await self.store.get_conversation(cid, owner)
        if conv is None:
            return self._no_conversation(cid)
        rec = await self.store.get_item(iid, owner)
        if rec is None or not await self.store.unlink_item(conv, rec):
            return Reply(404, f"Item with id '{iid}' not found.", "item_not_found")
        return 200, orjson.dumps(_public(conv))

    async def _add_items(self, cid: str, owner, items: list):
        conv = await self.store.get_conversation(cid, owner)
        if conv is None:
            return self._no_conversation(cid)
        added = await self._add(conv, owner, items)
        if type(added) is Reply:
            return added
        return 200, page(added, False)

    async def _add(self, conv: dict, owner, items: list):
        """Adds ``items`` to the conversation ``conv``: the added item objects, or a
        ``Reply`` (a reference to an unknown item; nothing is added then)."""
        now = int(time.time())
        refs = {}
        for it in items:
            if it.get("type") == "item_reference":
                rec = await self.store.get_item(it["id"], owner)
                if rec is None:
                    return Reply(404, f"Item with id '{it['id']}' not found.", "item_not_found", param="items")
                refs[it["id"]] = rec
        fresh = convert.input_items([it for it in items if it.get("type") != "item_reference"])
        new = iter(fresh)
        out = [refs[it["id"]]["item"] if it.get("type") == "item_reference" else next(new) for it in items]
        if fresh:
            await self.store.add_items(conv, [item_record(it, None, owner, now) for it in fresh], now)
        if refs:
            await self.store.link_items(conv, list(refs.values()), now)
        return out
