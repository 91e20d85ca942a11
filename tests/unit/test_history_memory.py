"""The memory history backend (smg/history/memory.py): count and age bounds, tenant
visibility, chains, links across conversations, the items list cursor."""
import asyncio

from smg.history.memory import MemoryStore


def run(coro):
    return asyncio.run(coro)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def resp(rid, prev=None, owner=None, t=1000):
    return {"id": rid, "owner": owner, "previous_response_id": prev, "created_at": t, "input": [],
            "raw_response": {"output": []}}


def item(iid, t=1000, owner=None):
    return {"id": iid, "owner": owner, "created_at": t, "item": {"id": iid}}


def test_responses_bounded_by_count_oldest_first():
    s = MemoryStore(2, 10, 0)
    for r in ("a", "b", "c"):
        run(s.put_response(resp(r)))
    assert run(s.get_response("a", None)) is None
    assert [run(s.get_response(r, None))["id"] for r in ("b", "c")] == ["b", "c"]


def test_retention_drops_old_records_on_write():
    clock = Clock()
    s = MemoryStore(10, 10, 60, clock=clock)
    run(s.put_response(resp("old", t=1000)))
    run(s.create_conversation({"id": "c", "owner": None, "created_at": 1000, "metadata": {}}))
    clock.t = 1100
    run(s.put_response(resp("new", t=1100)))
    assert run(s.get_response("old", None)) is None and run(s.get_conversation("c", None)) is None
    assert run(s.get_response("new", None)) is not None


def test_other_tenant_sees_nothing_and_ownerless_is_shared():
    s = MemoryStore(10, 10, 0)
    run(s.put_response(resp("mine", owner="auth:red")))
    run(s.put_response(resp("shared")))
    assert run(s.get_response("mine", "auth:blue")) is None
    assert run(s.delete_response("mine", "auth:blue")) is False
    assert run(s.get_response("mine", "auth:red"))["id"] == "mine"
    assert run(s.get_response("shared", "auth:blue"))["id"] == "shared"


def test_chain_oldest_first_stops_at_cycles_and_depth():
    s = MemoryStore(10, 10, 0)
    run(s.put_response(resp("r1")))
    run(s.put_response(resp("r2", "r1")))
    run(s.put_response(resp("r3", "r2")))
    assert [r["id"] for r in run(s.response_chain("r3", None, 10))] == ["r1", "r2", "r3"]
    assert [r["id"] for r in run(s.response_chain("r3", None, 2))] == ["r2", "r3"]
    run(s.put_response(resp("x", "y")))
    run(s.put_response(resp("y", "x")))
    assert [r["id"] for r in run(s.response_chain("x", None, 10))] == ["y", "x"]


def test_items_links_cursor_and_eviction_unlinks():
    s = MemoryStore(10, 5, 0)
    for c in ("c1", "c2"):
        run(s.create_conversation({"id": c, "owner": None, "created_at": 1000, "metadata": {}}))
    c1, c2 = {"id": "c1"}, {"id": "c2"}
    run(s.add_items(c1, [item("i1"), item("i2"), item("i3")], 1))
    run(s.link_items(c2, [item("i1"), item("missing")], 2))
    ids = lambda r: [i["id"] for i in r[0]]
    assert ids(run(s.list_items(c1, 10, "asc", None))) == ["i1", "i2", "i3"]
    assert ids(run(s.list_items(c1, 2, "desc", None))) == ["i3", "i2"]
    assert run(s.list_items(c1, 2, "desc", None))[1] is True
    assert ids(run(s.list_items(c1, 10, "asc", "i1"))) == ["i2", "i3"]
    assert ids(run(s.list_items(c2, 10, "asc", None))) == ["i1"]
    # 5 records at most (2 conversations + 3 items): a fourth item pushes out i1 everywhere
    run(s.add_items(c1, [item("i4")], 3))
    assert run(s.get_item("i1", None)) is None
    assert ids(run(s.list_items(c2, 10, "asc", None))) == []
    assert "i1" not in s.linked_in
    assert run(s.unlink_item(c1, item("i2"))) is True and run(s.unlink_item(c1, item("i2"))) is False
    assert run(s.delete_conversation("c1", None)) is True
    assert run(s.list_items(c1, 10, "asc", None)) == ([], False) and "i3" not in s.linked_in
