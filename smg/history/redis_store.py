"""The ``redis`` history backend (the ``redis`` asyncio client): SMG's keys in Redis.

Keys (``[owner:]`` is the owning tenant and a colon, nothing for records without
owner): ``[owner:]response:{id}`` and ``[owner:]conversation:{id}`` (JSON strings),
``[owner:]item:{id}`` (JSON), ``[owner:]conversation:{id}:items`` (a sorted set of item
keys, scored by ``[owner:]conversation:{id}:seq`` so the items keep their order),
``[owner:]safety:{identifier}:responses`` (a set of response ids).

Rules:
- A read by tenant T looks at T's key then at the ownerless one (smg/history's
  visibility rule); another tenant's records are under keys T never reads.
- Every key written gets ``--redis-retention-days`` as its TTL (``-1`` or ``0``: kept).
- One connection pool (``--redis-pool-max``, callers wait for a free connection);
  every operation is bounded by ``--redis-op-timeout-secs``; a Redis error, a lost
  connection or a timeout raises ``StorageUnavailable`` (503 ``storage_unavailable``).
"""
from __future__ import annotations

import asyncio

import orjson

from smg.errors import ConfigError
from smg.history import StorageUnavailable

_ERRORS: tuple = ()


def _errors() -> tuple:
    global _ERRORS
    if not _ERRORS:
        from redis.exceptions import RedisError
        _ERRORS = (RedisError, OSError, TimeoutError, ConnectionError)
    return _ERRORS


def _p(owner) -> str:
    return f"{owner}:" if owner else ""


def _reads(owner, key: str) -> list:
    """The keys a tenant's read of ``key`` looks at, in order."""
    return [f"{owner}:{key}", key] if owner else [key]


class RedisStore:
    name = "redis"

    def __init__(self, url: str, pool_max: int, retention_days: int, op_timeout: float) -> None:
        self.url = url
        self.pool_max = max(1, pool_max)
        self.ttl = retention_days * 86400 if retention_days > 0 else None
        self.timeout = op_timeout
        self.r = None

    async def start(self) -> None:
        import redis.asyncio as aioredis
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.pool_max, timeout=self.timeout, socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout)
        self.r = aioredis.Redis(connection_pool=pool)
        try:
            await self._run(self.r.ping())
        except StorageUnavailable as e:
            await self.close()
            raise ConfigError("--redis-url", f"the history Redis is not usable: {e}") from e

    async def close(self) -> None:
        if self.r is not None:
            await self.r.aclose()
            self.r = None

    async def _run(self, awaitable):
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except _errors() as e:
            raise StorageUnavailable(f"redis: {type(e).__name__}: {e}") from e

    async def _first(self, owner, key: str):
        """The record a tenant sees under ``key``, with the key it was found at."""
        keys = _reads(owner, key)
        vals = await self._run(self.r.mget(keys))
        for k, v in zip(keys, vals):
            if v is not None:
                return k, orjson.loads(v)
        return None, None

    async def _set(self, key: str, rec: dict) -> None:
        await self._run(self.r.set(key, orjson.dumps(rec), ex=self.ttl))

    # -- responses ----------------------------------------------------------------------

    async def put_response(self, rec: dict) -> None:
        p = _p(rec["owner"])
        pipe = self.r.pipeline(transaction=True)
        pipe.set(f"{p}response:{rec['id']}", orjson.dumps(rec), ex=self.ttl)
        ident = rec.get("safety_identifier")
        if ident:
            skey = f"{p}safety:{ident}:responses"
            pipe.sadd(skey, rec["id"])
            if self.ttl:
                pipe.expire(skey, self.ttl)
        await self._run(pipe.execute())

    async def get_response(self, rid: str, owner):
        return (await self._first(owner, f"response:{rid}"))[1]

    async def delete_response(self, rid: str, owner) -> bool:
        key, rec = await self._first(owner, f"response:{rid}")
        if rec is None:
            return False
        return bool(await self._run(self.r.delete(key)))

    async def response_chain(self, rid: str, owner, max_depth: int) -> list:
        chain: list = []
        seen = set()
        while rid is not None and rid not in seen and len(chain) < max_depth:
            seen.add(rid)
            rec = await self.get_response(rid, owner)
            if rec is None:
                break
            chain.append(rec)
            rid = rec.get("previous_response_id")
        chain.reverse()
        return chain

    # -- conversations ------------------------------------------------------------------

    async def create_conversation(self, rec: dict) -> None:
        await self._set(f"{_p(rec['owner'])}conversation:{rec['id']}", rec)

    async def get_conversation(self, cid: str, owner):
        return (await self._first(owner, f"conversation:{cid}"))[1]

    async def update_conversation(self, cid: str, owner, metadata: dict):
        key, rec = await self._first(owner, f"conversation:{cid}")
        if rec is None:
            return None
        rec["metadata"] = metadata
        await self._set(key, rec)
        return rec

    async def delete_conversation(self, cid: str, owner) -> bool:
        key, rec = await self._first(owner, f"conversation:{cid}")
        if rec is None:
            return False
        await self._run(self.r.delete(key, f"{key}:items", f"{key}:seq"))
        return True

    # -- items --------------------------------------------------------------------------

    @staticmethod
    def _conv_key(conv: dict) -> str:
        return f"{_p(conv['owner'])}conversation:{conv['id']}"

    @staticmethod
    def _item_key(item: dict) -> str:
        return f"{_p(item['owner'])}item:{item['id']}"

    async def add_items(self, conv: dict, items: list, added_at: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        for it in items:
            pipe.set(self._item_key(it), orjson.dumps(it), ex=self.ttl)
        await self._run(pipe.execute())
        await self.link_items(conv, items, added_at)

    async def link_items(self, conv: dict, items: list, added_at: int) -> None:
        if not items:
            return
        ck = self._conv_key(conv)
        last = await self._run(self.r.incrby(f"{ck}:seq", len(items)))
        first = last - len(items) + 1
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(f"{ck}:items", {self._item_key(it): first + i for i, it in enumerate(items)}, nx=True)
        if self.ttl:
            pipe.expire(f"{ck}:items", self.ttl)
            pipe.expire(f"{ck}:seq", self.ttl)
        await self._run(pipe.execute())

    async def list_items(self, conv: dict, limit: int, order: str, after: str | None) -> tuple:
        zk = f"{self._conv_key(conv)}:items"
        r = self.r
        lo, hi = "-inf", "+inf"
        if after is not None:
            members = _reads(conv["owner"], f"item:{after}")
            scores = await self._run(r.zmscore(zk, members))
            score = next((s for s in scores if s is not None), None)
            if score is None:
                return [], False
            if order == "asc":
                lo = f"({score}"
            else:
                hi = f"({score}"
        if order == "asc":
            keys = await self._run(r.zrangebyscore(zk, lo, hi, start=0, num=limit + 1))
        else:
            keys = await self._run(r.zrevrangebyscore(zk, hi, lo, start=0, num=limit + 1))
        if not keys:
            return [], False
        vals = await self._run(r.mget(keys))
        items = [orjson.loads(v) for v in vals if v is not None]
        return items[:limit], len(keys) > limit

    async def get_item(self, iid: str, owner):
        return (await self._first(owner, f"item:{iid}"))[1]

    async def is_linked(self, conv: dict, item: dict) -> bool:
        score = await self._run(self.r.zscore(f"{self._conv_key(conv)}:items", self._item_key(item)))
        return score is not None

    async def unlink_item(self, conv: dict, item: dict) -> bool:
        return bool(await self._run(self.r.zrem(f"{self._conv_key(conv)}:items", self._item_key(item))))
