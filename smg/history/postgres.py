"""The ``postgres`` history backend (``asyncpg``): SMG's logical tables in PostgreSQL.

Tables (version 1 of the migrations below): ``conversations``, ``conversation_items``,
``conversation_item_links`` (primary key (conversation_id, item_id), indexed on
(conversation_id, added_at); ``seq`` orders a conversation's items), ``responses``;
each row also keeps ``owner``, the tenant that made it. ``smg_schema_version`` records
the migrations applied.

Rules:
- Migrations are versioned and applied at start, in one transaction under an advisory
  lock (several gateways may start at once), only when asked: ``DB_AUTO_MIGRATE=true``
  in the environment (SMG's switch). A database behind the gateway's version without it
  stops start-up with the reason.
- One connection pool (``--postgres-pool-max``); every operation is bounded by
  ``--postgres-op-timeout-secs``, and any database error, lost connection or timeout
  raises ``StorageUnavailable`` (503 ``storage_unavailable``). The pool reconnects by
  itself once the database is back.
- Visibility is in the queries: ``owner IS NULL OR owner = $owner``.
- JSON columns are ``jsonb``, encoded with orjson by the pool's type codec.
"""
from __future__ import annotations

import asyncio
import datetime
import os

import orjson

from smg.errors import ConfigError
from smg.history import StorageUnavailable

MIGRATIONS = (
    (1, "initial schema", (
        """CREATE TABLE IF NOT EXISTS conversations (
            id VARCHAR(64) PRIMARY KEY, owner TEXT, created_at TIMESTAMPTZ NOT NULL, metadata JSONB)""",
        """CREATE TABLE IF NOT EXISTS conversation_items (
            id VARCHAR(64) PRIMARY KEY, owner TEXT, response_id VARCHAR(64), item_type VARCHAR(64) NOT NULL,
            role VARCHAR(32), content JSONB, status VARCHAR(32), created_at TIMESTAMPTZ NOT NULL,
            raw_item JSONB NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS conversation_item_links (
            conversation_id VARCHAR(64) NOT NULL, item_id VARCHAR(64) NOT NULL, added_at TIMESTAMPTZ NOT NULL,
            seq BIGSERIAL, PRIMARY KEY (conversation_id, item_id))""",
        "CREATE INDEX IF NOT EXISTS conversation_item_links_added ON conversation_item_links "
        "(conversation_id, added_at)",
        "CREATE INDEX IF NOT EXISTS conversation_item_links_seq ON conversation_item_links (conversation_id, seq)",
        """CREATE TABLE IF NOT EXISTS responses (
            id VARCHAR(64) PRIMARY KEY, owner TEXT, conversation_id VARCHAR(64), previous_response_id VARCHAR(64),
            input JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL, safety_identifier VARCHAR(128),
            model VARCHAR(128), raw_response JSONB NOT NULL)""",
    )),
)
VERSION = MIGRATIONS[-1][0]
_LOCK = 0x5347_4D48   # the advisory lock of migrations ("SGMH")
_SEEN = "(owner IS NULL OR owner = $2)"
_ERRORS: tuple = ()


def _errors() -> tuple:
    global _ERRORS
    if not _ERRORS:
        import asyncpg
        _ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ConnectionError)
    return _ERRORS


def _ts(t: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


def _epoch(d: datetime.datetime) -> int:
    return int(d.timestamp())


def _json(v) -> str:
    return orjson.dumps(v).decode()


async def _init(conn) -> None:
    await conn.set_type_codec("jsonb", encoder=_json, decoder=orjson.loads, schema="pg_catalog")


def auto_migrate() -> bool:
    return os.environ.get("DB_AUTO_MIGRATE", "").strip().lower() in ("1", "true", "yes")


class PostgresStore:
    name = "postgres"

    def __init__(self, url: str, pool_max: int, op_timeout: float, migrate: bool | None = None) -> None:
        self.url = url
        self.pool_max = max(1, pool_max)
        self.timeout = op_timeout
        self.migrate = auto_migrate() if migrate is None else migrate
        self.pool = None

    async def start(self) -> None:
        import asyncpg
        try:
            self.pool = await asyncio.wait_for(asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_max, init=_init, command_timeout=self.timeout),
                self.timeout * 2)
            async with self.pool.acquire() as c:
                await self._schema(c)
        except _errors() as e:
            await self.close()
            raise ConfigError("--postgres-db-url", f"the history database is not usable: {e}") from e
        except ConfigError:
            await self.close()
            raise

    async def _schema(self, c) -> None:
        async with c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            have = await c.fetchval("SELECT to_regclass('smg_schema_version') IS NOT NULL")
            current = await c.fetchval("SELECT coalesce(max(version), 0) FROM smg_schema_version") if have else 0
            if current >= VERSION:
                return
            if not self.migrate:
                raise ConfigError("--postgres-db-url", f"the history database's schema is at version {current}, "
                                  f"smg needs {VERSION}: start once with DB_AUTO_MIGRATE=true to migrate it")
            await c.execute("CREATE TABLE IF NOT EXISTS smg_schema_version (version INT PRIMARY KEY, "
                            "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            for version, about, statements in MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    await c.execute(sql)
                await c.execute("INSERT INTO smg_schema_version (version, description) VALUES ($1, $2)",
                                version, about)

    def open_connections(self) -> int:
        """The pool's open connections (``smg_db_connections_active``)."""
        return self.pool.get_size() if self.pool is not None else 0

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _run(self, fn):
        """``fn(connection)`` on a pooled connection, bounded; failures are ``StorageUnavailable``."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self.pool.acquire() as c:
                    return await fn(c)
        except _errors() as e:
            raise StorageUnavailable(f"postgres: {type(e).__name__}: {e}") from e

    # -- responses ----------------------------------------------------------------------

    @staticmethod
    def _response(row) -> dict:
        return {"id": row["id"], "owner": row["owner"], "conversation_id": row["conversation_id"],
                "previous_response_id": row["previous_response_id"], "input": row["input"],
                "created_at": _epoch(row["created_at"]), "model": row["model"],
                "safety_identifier": row["safety_identifier"], "raw_response": row["raw_response"]}

    async def put_response(self, rec: dict) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO responses (id, owner, conversation_id, previous_response_id, input, created_at, "
            "safety_identifier, model, raw_response) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (id) DO UPDATE SET raw_response = EXCLUDED.raw_response",
            rec["id"], rec["owner"], rec["conversation_id"], rec["previous_response_id"], rec["input"],
            _ts(rec["created_at"]), rec["safety_identifier"], rec["model"], rec["raw_response"]))

    async def get_response(self, rid: str, owner):
        row = await self._run(lambda c: c.fetchrow(f"SELECT * FROM responses WHERE id = $1 AND {_SEEN}", rid, owner))
        return None if row is None else self._response(row)

    async def delete_response(self, rid: str, owner) -> bool:
        done = await self._run(lambda c: c.execute(f"DELETE FROM responses WHERE id = $1 AND {_SEEN}", rid, owner))
        return done != "DELETE 0"

    async def response_chain(self, rid: str, owner, max_depth: int) -> list:
        rows = await self._run(lambda c: c.fetch(
            f"""WITH RECURSIVE chain AS (
                  SELECT r.*, 1 AS depth FROM responses r WHERE id = $1 AND {_SEEN}
                  UNION ALL
                  SELECT r.*, chain.depth + 1 FROM responses r JOIN chain ON r.id = chain.previous_response_id
                  WHERE chain.depth < $3 AND (r.owner IS NULL OR r.owner = $2))
                SELECT * FROM chain ORDER BY depth DESC""", rid, owner, max_depth))
        return [self._response(r) for r in rows]

    # -- conversations ------------------------------------------------------------------

    @staticmethod
    def _conversation(row) -> dict:
        return {"id": row["id"], "owner": row["owner"], "created_at": _epoch(row["created_at"]),
                "metadata": row["metadata"] or {}}

    async def create_conversation(self, rec: dict) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO conversations (id, owner, created_at, metadata) VALUES ($1, $2, $3, $4)",
            rec["id"], rec["owner"], _ts(rec["created_at"]), rec["metadata"]))

    async def get_conversation(self, cid: str, owner):
        row = await self._run(lambda c: c.fetchrow(f"SELECT * FROM conversations WHERE id = $1 AND {_SEEN}",
                                                   cid, owner))
        return None if row is None else self._conversation(row)

    async def update_conversation(self, cid: str, owner, metadata: dict):
        row = await self._run(lambda c: c.fetchrow(
            f"UPDATE conversations SET metadata = $3 WHERE id = $1 AND {_SEEN} RETURNING *", cid, owner, metadata))
        return None if row is None else self._conversation(row)

    async def delete_conversation(self, cid: str, owner) -> bool:
        async def op(c):
            async with c.transaction():
                done = await c.execute(f"DELETE FROM conversations WHERE id = $1 AND {_SEEN}", cid, owner)
                if done == "DELETE 0":
                    return False
                await c.execute("DELETE FROM conversation_item_links WHERE conversation_id = $1", cid)
                return True
        return await self._run(op)

    # -- items --------------------------------------------------------------------------

    async def add_items(self, conv: dict, items: list, added_at: int) -> None:
        rows = [(it["id"], it["owner"], it["response_id"], it["item_type"], it["role"], it["content"], it["status"],
                 _ts(it["created_at"]), it["item"]) for it in items]
        links = [(conv["id"], it["id"], _ts(added_at)) for it in items]

        async def op(c):
            async with c.transaction():
                await c.executemany(
                    "INSERT INTO conversation_items (id, owner, response_id, item_type, role, content, status, "
                    "created_at, raw_item) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                    rows)
                await c.executemany("INSERT INTO conversation_item_links (conversation_id, item_id, added_at) "
                                    "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", links)
        await self._run(op)

    async def link_items(self, conv: dict, items: list, added_at: int) -> None:
        links = [(conv["id"], it["id"], _ts(added_at)) for it in items]
        await self._run(lambda c: c.executemany(
            "INSERT INTO conversation_item_links (conversation_id, item_id, added_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING", links))

    async def list_items(self, conv: dict, limit: int, order: str, after: str | None) -> tuple:
        cid = conv["id"]
        asc = order == "asc"

        async def op(c):
            cursor = None
            if after is not None:
                cursor = await c.fetchval("SELECT seq FROM conversation_item_links WHERE conversation_id = $1 "
                                          "AND item_id = $2", cid, after)
                if cursor is None:
                    return []
            return await c.fetch(
                "SELECT i.* FROM conversation_item_links l JOIN conversation_items i ON i.id = l.item_id "
                f"WHERE l.conversation_id = $1 AND ($2::bigint IS NULL OR l.seq {'>' if asc else '<'} $2) "
                f"ORDER BY l.seq {'ASC' if asc else 'DESC'} LIMIT $3", cid, cursor, limit + 1)
        rows = await self._run(op)
        items = [self._item(r) for r in rows]
        return items[:limit], len(items) > limit

    @staticmethod
    def _item(row) -> dict:
        return {"id": row["id"], "owner": row["owner"], "response_id": row["response_id"],
                "item_type": row["item_type"], "role": row["role"], "content": row["content"],
                "status": row["status"], "created_at": _epoch(row["created_at"]), "item": row["raw_item"]}

    async def get_item(self, iid: str, owner):
        row = await self._run(lambda c: c.fetchrow(f"SELECT * FROM conversation_items WHERE id = $1 AND {_SEEN}",
                                                   iid, owner))
        return None if row is None else self._item(row)

    async def is_linked(self, conv: dict, item: dict) -> bool:
        return await self._run(lambda c: c.fetchval(
            "SELECT EXISTS (SELECT 1 FROM conversation_item_links WHERE conversation_id = $1 AND item_id = $2)",
            conv["id"], item["id"]))

    async def unlink_item(self, conv: dict, item: dict) -> bool:
        done = await self._run(lambda c: c.execute(
            "DELETE FROM conversation_item_links WHERE conversation_id = $1 AND item_id = $2", conv["id"], item["id"]))
        return done != "DELETE 0"
