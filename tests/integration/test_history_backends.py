"""The PostgreSQL and Redis history backends against real servers started here on free
loopback ports: history surviving a gateway restart, storage going away (503
``storage_unavailable``) and coming back (the next request succeeds, nothing stored
before is lost), PostgreSQL's versioned migrations applied only when asked, and the
records where SMG keeps them (tables, Redis keys with their TTL)."""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from smg.config.load import build_config
from smg.errors import ConfigError
from smg.testing.datastores import PostgresServer, RedisServer
from tests.integration.recording_worker import MODEL, Fleet
from tests.integration.test_responses_api import _env, client, script

asyncpg = pytest.importorskip("asyncpg")
redis = pytest.importorskip("redis")

BACKENDS = ["postgres", "redis"]


def _server(name: str):
    if name == "postgres":
        if PostgresServer.binaries() is None:
            pytest.skip("PostgreSQL binaries (initdb, postgres) not installed")
        return PostgresServer()
    if RedisServer.binary() is None:
        pytest.skip("redis-server not installed")
    return RedisServer()


def _settings(name: str, srv) -> dict:
    if name == "postgres":
        return {"history_backend": "postgres", "postgres_db_url": srv.url, "postgres_op_timeout_secs": 2}
    return {"history_backend": "redis", "redis_url": srv.url, "redis_op_timeout_secs": 2}


@pytest.fixture(scope="module")
def fleet():
    with Fleet([script]) as f:
        yield f


@pytest.mark.parametrize("name", BACKENDS)
def test_history_survives_a_gateway_restart(name, fleet):
    with _server(name) as srv, _env("DB_AUTO_MIGRATE", "true"):
        a = fleet.gateway(tenant_api_key=["red:red-key"], **_settings(name, srv))
        c = client(a)
        r1 = c.responses.create(model=MODEL, input="remember me")
        conv = c.conversations.create(metadata={"n": "1"})
        c.responses.create(model=MODEL, input="in conv", conversation=conv.id)
        fleet.harnesses.remove(a)
        a.__exit__(None, None, None)
        b = fleet.gateway(tenant_api_key=["red:red-key"], **_settings(name, srv))
        c = client(b)
        assert c.responses.retrieve(r1.id).output_text == "echo: remember me"
        r2 = c.responses.create(model=MODEL, input="and now?", previous_response_id=r1.id)
        assert json.loads(fleet.workers[0].requests[-1].body)["messages"][:2] == [
            {"role": "user", "content": "remember me"}, {"role": "assistant", "content": "echo: remember me"}]
        assert r2.previous_response_id == r1.id
        assert c.conversations.retrieve(conv.id).metadata == {"n": "1"}
        assert [i.content[0].text for i in c.conversations.items.list(conv.id, order="asc").data] == [
            "in conv", "echo: in conv"]


@pytest.mark.parametrize("name", BACKENDS)
def test_storage_down_answers_503_then_recovers(name, fleet):
    with _server(name) as srv, _env("DB_AUTO_MIGRATE", "true"):
        h = fleet.gateway(**_settings(name, srv))
        c = client(h)
        before = c.responses.create(model=MODEL, input="kept")
        srv.stop()
        for call in (lambda: c.responses.create(model=MODEL, input="lost"),
                     lambda: c.responses.retrieve(before.id),
                     lambda: c.responses.create(model=MODEL, input="x", previous_response_id=before.id),
                     lambda: c.conversations.create()):
            with pytest.raises(openai.InternalServerError) as e:
                call()
            assert e.value.status_code == 503 and e.value.body["code"] == "storage_unavailable"
        # a streamed turn ends with response.failed naming the storage
        with httpx.stream("POST", h.url + "/v1/responses", json={"model": MODEL, "input": "s", "stream": True},
                          timeout=10) as r:
            last = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")][-1]
        assert last["type"] == "response.failed" and last["response"]["error"]["code"] == "storage_unavailable"
        srv.start()
        after = c.responses.create(model=MODEL, input="back")
        assert c.responses.retrieve(after.id).output_text == "echo: back"
        if name == "postgres":   # the database kept its data; Redis here runs without persistence
            assert c.responses.retrieve(before.id).output_text == "echo: kept"


def test_postgres_migrations_only_when_asked():
    if PostgresServer.binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) not installed")
    from smg.history.postgres import VERSION, PostgresStore

    async def run(pg):
        refused = PostgresStore(pg.url, 2, 5, migrate=False)
        with pytest.raises(ConfigError, match="DB_AUTO_MIGRATE=true"):
            await refused.start()
        assert refused.pool is None
        # two gateways starting at once: one migrates, the other finds the schema current
        stores = [PostgresStore(pg.url, 2, 5, migrate=True) for _ in range(2)]
        await asyncio.gather(*(s.start() for s in stores))
        plain = PostgresStore(pg.url, 2, 5, migrate=False)
        await plain.start()   # current: starts without being asked to migrate
        conn = await asyncpg.connect(pg.url)
        try:
            rows = await conn.fetch("SELECT version FROM smg_schema_version")
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        finally:
            await conn.close()
        for s in (*stores, plain):
            await s.close()
        return [r["version"] for r in rows], tables

    with PostgresServer() as pg:
        versions, tables = asyncio.run(run(pg))
    assert versions == [VERSION]
    assert {"conversations", "conversation_items", "conversation_item_links", "responses"} <= tables


def test_records_where_smg_keeps_them(fleet):
    if RedisServer.binary() is None or PostgresServer.binaries() is None:
        pytest.skip("redis-server or PostgreSQL not installed")
    with RedisServer() as rs, PostgresServer() as pg, _env("DB_AUTO_MIGRATE", "true"):
        h = fleet.gateway(tenant_api_key=["red:red-key"], history_backend="redis", redis_url=rs.url,
                          redis_retention_days=2)
        c = client(h)
        r = c.responses.create(model=MODEL, input="keys", safety_identifier="user-1")
        conv = c.conversations.create()
        c.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "k"}])
        rc = redis.Redis.from_url(rs.url)
        assert rc.exists(f"auth:red:response:{r.id}", f"auth:red:conversation:{conv.id}") == 2
        assert 0 < rc.ttl(f"auth:red:response:{r.id}") <= 2 * 86400
        assert rc.smembers("auth:red:safety:user-1:responses") == {r.id.encode()}
        (member,) = rc.zrange(f"auth:red:conversation:{conv.id}:items", 0, -1)
        assert member.startswith(b"auth:red:item:msg_")
        rc.close()
        p = fleet.gateway(tenant_api_key=["red:red-key"], history_backend="postgres", postgres_db_url=pg.url)
        r2 = client(p).responses.create(model=MODEL, input="rows")

        async def row():
            conn = await asyncpg.connect(pg.url)
            try:
                return await conn.fetchrow("SELECT owner, model, raw_response FROM responses WHERE id = $1", r2.id)
            finally:
                await conn.close()
        got = asyncio.run(row())
        assert got["owner"] == "auth:red" and got["model"] == MODEL
        assert json.loads(got["raw_response"])["output"][0]["content"][0]["text"] == "echo: rows"


def test_backend_flags_need_their_urls():
    from smg.history import build
    for backend, flag in (("postgres", "--postgres-db-url"), ("redis", "--redis-url")):
        with pytest.raises(ConfigError, match=flag):
            build(build_config({"history_backend": backend}))
