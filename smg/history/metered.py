"""A history store with the ``smg_db_*`` metrics: every operation of the wrapped
backend counted by ``storage_type`` (the backend's name), ``operation`` (the method)
and ``result`` (``success``, or ``error`` when it raised), and timed.

Rules:
- The wrapper changes nothing else: same arguments, results and exceptions
  (``StorageUnavailable`` passes through, counted as an error; a cancelled operation is
  not counted).
- ``start`` and ``close`` are the store's life, not operations: passed on uncounted.
"""
from __future__ import annotations

import asyncio
import time

#: The store interface's operations (smg/history/__init__.py).
OPERATIONS = ("put_response", "get_response", "delete_response", "response_chain", "create_conversation",
              "get_conversation", "update_conversation", "delete_conversation", "add_items", "link_items",
              "list_items", "get_item", "is_linked", "unlink_item")


class MeteredStore:
    def __init__(self, store, ops, duration) -> None:
        self.store = store
        self.name = store.name
        kind = store.name
        for op in OPERATIONS:
            setattr(self, op, _metered(getattr(store, op), kind, op, ops, duration))

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    def __getattr__(self, name):   # anything else (a backend's own helpers) is the store's
        return getattr(self.store, name)


def _metered(fn, kind: str, op: str, ops, duration):
    ok_key, err_key, dur_key = (kind, op, "success"), (kind, op, "error"), (kind, op)

    async def call(*args):
        started = time.monotonic()
        try:
            out = await fn(*args)
        except asyncio.CancelledError:
            raise
        except BaseException:
            ops.inc(err_key)
            duration.observe(dur_key, time.monotonic() - started)
            raise
        ops.inc(ok_key)
        duration.observe(dur_key, time.monotonic() - started)
        return out
    return call
