"""The ``memory`` history backend (the default): records in the gateway's process.

Rules:
- Bounded by count: at most ``max_responses`` responses and ``max_items`` conversation
  items (conversations count against ``max_items`` too); the oldest record goes first.
- Bounded by age: on every write, records older than ``retention_secs`` are dropped
  (0: kept until a count bound pushes them out).
- An item pushed out is unlinked from every conversation that listed it, and a deleted
  conversation drops its links, so the link table never outgrows the items.
- Nothing here awaits: each operation completes in the call (the coroutine interface
  is the backends' common one).
"""
from __future__ import annotations

import time
from collections import OrderedDict

from smg.history import visible


class MemoryStore:
    name = "memory"

    def __init__(self, max_responses: int, max_items: int, retention_secs: int, clock=time.time) -> None:
        self.max_responses = max(1, max_responses)
        self.max_items = max(1, max_items)
        self.retention = retention_secs
        self.clock = clock
        self.responses: OrderedDict = OrderedDict()
        self.conversations: OrderedDict = OrderedDict()
        self.items: OrderedDict = OrderedDict()
        self.links: dict = {}        # conversation id -> OrderedDict(item id -> added_at)
        self.linked_in: dict = {}    # item id -> set of conversation ids

    # -- bounds -------------------------------------------------------------------------

    def _expire(self) -> None:
        if self.retention <= 0:
            return
        cutoff = self.clock() - self.retention
        for table, drop in ((self.responses, None), (self.items, self._unlink_all),
                            (self.conversations, self._drop_links)):
            while table:
                key, rec = next(iter(table.items()))
                if rec["created_at"] >= cutoff:
                    break
                table.popitem(last=False)
                if drop is not None:
                    drop(key)

    def _unlink_all(self, iid: str) -> None:
        for cid in self.linked_in.pop(iid, ()):
            links = self.links.get(cid)
            if links is not None:
                links.pop(iid, None)

    def _drop_links(self, cid: str) -> None:
        for iid in self.links.pop(cid, {}):
            convs = self.linked_in.get(iid)
            if convs is not None:
                convs.discard(cid)
                if not convs:
                    del self.linked_in[iid]

    def _bound_items(self) -> None:
        while len(self.items) + len(self.conversations) > self.max_items and self.items:
            iid, _ = self.items.popitem(last=False)
            self._unlink_all(iid)
        while len(self.conversations) > self.max_items:
            cid, _ = self.conversations.popitem(last=False)
            self._drop_links(cid)

    def records(self) -> int:
        """Responses, conversations and items held (``smg_db_items_stored``)."""
        return len(self.responses) + len(self.conversations) + len(self.items)

    # -- responses ----------------------------------------------------------------------

    async def put_response(self, rec: dict) -> None:
        self._expire()
        self.responses[rec["id"]] = rec
        self.responses.move_to_end(rec["id"])
        while len(self.responses) > self.max_responses:
            self.responses.popitem(last=False)

    async def get_response(self, rid: str, owner):
        return visible(self.responses.get(rid), owner)

    async def delete_response(self, rid: str, owner) -> bool:
        if visible(self.responses.get(rid), owner) is None:
            return False
        del self.responses[rid]
        return True

    async def response_chain(self, rid: str, owner, max_depth: int) -> list:
        chain: list = []
        seen = set()
        while rid is not None and rid not in seen and len(chain) < max_depth:
            seen.add(rid)
            rec = visible(self.responses.get(rid), owner)
            if rec is None:
                break
            chain.append(rec)
            rid = rec.get("previous_response_id")
        chain.reverse()
        return chain

    # -- conversations ------------------------------------------------------------------

    async def create_conversation(self, rec: dict) -> None:
        self._expire()
        self.conversations[rec["id"]] = rec
        self.links[rec["id"]] = OrderedDict()
        self._bound_items()

    async def get_conversation(self, cid: str, owner):
        return visible(self.conversations.get(cid), owner)

    async def update_conversation(self, cid: str, owner, metadata: dict):
        rec = visible(self.conversations.get(cid), owner)
        if rec is None:
            return None
        rec = dict(rec, metadata=metadata)
        self.conversations[cid] = rec
        return rec

    async def delete_conversation(self, cid: str, owner) -> bool:
        if visible(self.conversations.get(cid), owner) is None:
            return False
        del self.conversations[cid]
        self._drop_links(cid)
        return True

    # -- items --------------------------------------------------------------------------

    async def add_items(self, conv: dict, items: list, added_at: int) -> None:
        self._expire()
        for it in items:
            self.items[it["id"]] = it
        await self.link_items(conv, items, added_at)
        self._bound_items()

    async def link_items(self, conv: dict, items: list, added_at: int) -> None:
        cid = conv["id"]
        links = self.links.get(cid)
        if links is None:
            return
        for it in items:
            iid = it["id"]
            if iid in self.items and iid not in links:
                links[iid] = added_at
                self.linked_in.setdefault(iid, set()).add(cid)

    async def list_items(self, conv: dict, limit: int, order: str, after: str | None) -> tuple:
        links = self.links.get(conv["id"])
        if not links:
            return [], False
        ids = list(links) if order == "asc" else list(reversed(links))
        if after is not None:
            try:
                ids = ids[ids.index(after) + 1:]
            except ValueError:
                ids = []
        out = [self.items[i] for i in ids[:limit + 1] if i in self.items]
        return out[:limit], len(out) > limit

    async def get_item(self, iid: str, owner):
        return visible(self.items.get(iid), owner)

    async def is_linked(self, conv: dict, item: dict) -> bool:
        links = self.links.get(conv["id"])
        return links is not None and item["id"] in links

    async def unlink_item(self, conv: dict, item: dict) -> bool:
        cid, iid = conv["id"], item["id"]
        links = self.links.get(cid)
        if links is None or links.pop(iid, None) is None:
            return False
        convs = self.linked_in.get(iid)
        if convs is not None:
            convs.discard(cid)
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
