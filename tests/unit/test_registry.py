"""Worker registry: role-aware candidates, the bounded candidate cache, event records."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.workers import events as E
from smg.workers.registry import ADDED, REMOVED, WorkerRegistry
from smg.workers.spec import WORKER_TYPES
from smg.workers.worker import DRAINING, FAILED, NOT_READY, PENDING, READY, Worker


def ready(reg: WorkerRegistry, *workers: Worker) -> None:
    for w in workers:
        reg.add(w)
        reg.set_status(w, READY)


def ids(ws) -> list:
    return sorted(w.id for w in ws)


# -- roles

def test_regular_traffic_never_reaches_prefill_or_decode_workers():
    reg = WorkerRegistry()
    ready(reg, Worker("http://r:1", ("m",), "r"), Worker("http://p:1", ("m",), "p", "prefill"),
          Worker("http://d:1", ("m",), "d", "decode"), Worker("http://e:1", (), "e", "encode"),
          Worker("http://pw:1", (), "pw", "prefill"))
    assert ids(reg.candidates("m")) == ["r"]
    assert ids(reg.candidates(None)) == ["r"]
    assert ids(reg.candidates("unknown-model")) == []
    assert ids(reg.candidates("m", "prefill")) == ["p", "pw"]
    assert ids(reg.candidates("other", "prefill")) == ["pw"]
    assert ids(reg.candidates("m", "decode")) == ["d"]
    assert ids(reg.candidates(None, "encode")) == ["e"]
    for w in reg.all():
        reg.set_status(w, NOT_READY)
    assert reg.candidates("m") == [] and ids(reg.fallback("m")) == ["r"]
    assert ids(reg.fallback("m", "prefill")) == ["p", "pw"]


def test_ready_count_counts_routable_regular_workers_only():
    reg = WorkerRegistry()
    r1, r2 = Worker("http://r:1", (), "r1"), Worker("http://r:2", ("x",), "r2")
    ready(reg, r1, r2, Worker("http://p:1", (), "p", "prefill"), Worker("http://d:1", (), "d", "decode"))
    assert reg.ready_count() == 2
    reg.set_breaker_open(r1, True)
    assert reg.ready_count() == 1
    reg.set_status(r2, NOT_READY)
    assert reg.ready_count() == 0


def test_unknown_role_or_worker_type_is_refused():
    reg = WorkerRegistry()
    with pytest.raises(ValueError):
        reg.candidates("m", "bogus")
    with pytest.raises(ValueError):
        reg.add(Worker("http://a:1", worker_type="bogus"))
    assert reg.cache_size() == 0 and len(reg) == 0


def test_fallback_is_the_panic_set():
    reg = WorkerRegistry()
    ws = [Worker(f"http://h:{i}", ("m",), f"w{i}") for i in range(5)]
    for w in ws:
        reg.add(w)
    for w, status in zip(ws, (READY, NOT_READY, FAILED, DRAINING, PENDING)):
        reg.set_status(w, status)
    reg.set_breaker_open(ws[0], True)
    assert reg.candidates("m") == []
    assert ids(reg.fallback("m")) == ["w0", "w1", "w2"]


# -- the candidate cache

def test_cached_lookup_is_the_same_list_until_an_event():
    reg = WorkerRegistry()
    a, b = Worker("http://a:1", ("m",), "a"), Worker("http://b:1", ("m",), "b")
    ready(reg, a)
    reg.add(b)
    first = reg.candidates("m")
    assert reg.candidates("m") is first and ids(first) == ["a"]
    assert reg._candidates[("m", "regular")] is first       # one dict lookup on the hot path
    reg.set_status(b, READY)
    assert ids(reg.candidates("m")) == ["a", "b"]
    reg.set_breaker_open(a, True)
    assert ids(reg.candidates("m")) == ["b"]
    reg.remove("b")
    assert reg.candidates("m") == []


@pytest.mark.parametrize("wildcard", [False, True])
def test_unknown_model_strings_do_not_grow_the_cache(wildcard):
    reg = WorkerRegistry()
    ready(reg, Worker("http://a:1", ("m",), "a"), Worker("http://p:1", ("m",), "p", "prefill"))
    if wildcard:
        ready(reg, Worker("http://any:1", (), "any"))
    reg.candidates("m")
    reg.candidates(None)
    baseline = reg.cache_size()
    for i in range(1000):
        got = reg.candidates(f"random-string-{i}")
        assert ids(got) == (["any"] if wildcard else [])
        assert reg.fallback(f"random-string-{i}") == got
        reg.candidates(f"random-string-{i}", "prefill")
    # one shared wildcard entry per (cache, role) asked for, never one per string
    assert reg.cache_size() == baseline + 3
    assert not any(isinstance(m, str) and m.startswith("random-") for m, _ in reg._candidates)


def test_wildcard_entry_is_shared_and_right_for_every_unknown_model():
    reg = WorkerRegistry()
    ready(reg, Worker("http://a:1", ("m",), "a"), Worker("http://any:1", (), "any"))
    x = reg.candidates("x")
    assert reg.candidates("y") is x and ids(x) == ["any"]
    assert ids(reg.candidates("m")) == ["a", "any"]         # a named model: its workers and wildcards
    assert ids(reg.candidates(None)) == ["a", "any"]


def test_a_model_becomes_cacheable_when_a_worker_names_it():
    reg = WorkerRegistry()
    w = Worker("http://a:1", (), "a")
    ready(reg, w)
    assert not reg.names("late") and reg.knows_model("late")  # a wildcard serves any model
    reg.set_models(w, ("late",), [])
    assert reg.names("late") and ids(reg.candidates("late")) == ["a"]
    assert reg.candidates("other") == [] and not reg.knows_model("other")
    reg.remove("a")
    assert not reg.names("late") and not reg.knows_model("late")


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(st.tuples(st.sampled_from(("", "a", "b")), st.sampled_from(WORKER_TYPES),
                                st.sampled_from((PENDING, READY, NOT_READY, FAILED, DRAINING)), st.booleans()),
                      max_size=12),
       queries=st.lists(st.tuples(st.sampled_from((None, "a", "b", "zz", "q1")), st.sampled_from(WORKER_TYPES)),
                        max_size=20))
def test_cached_answers_match_a_direct_scan(specs, queries):
    reg = WorkerRegistry()
    for i, (model, role, status, brk) in enumerate(specs):
        w = Worker(f"http://h:{i + 1}", (model,) if model else (), f"w{i}", role)
        reg.add(w)
        reg.set_status(w, status)
        reg.set_breaker_open(w, brk)
    for model, role in queries * 2:
        want = [w for w in reg.all() if w.worker_type == role and w.status == READY and not w.breaker_open
                and w.serves(model)]
        assert reg.candidates(model, role) == want
        panic = [w for w in reg.all() if w.worker_type == role and w.status in (READY, NOT_READY, FAILED)
                 and w.serves(model)]
        assert reg.fallback(model, role) == panic


# -- addresses

def test_dp_ranks_share_an_address_and_keep_their_keys():
    reg = WorkerRegistry()
    r0, r1 = Worker("http://h:8000", (), "r0", dp_rank=0), Worker("http://h:8000/", (), "r1", dp_rank=1)
    reg.add(r0)
    reg.add(r1)
    assert (r0.url, r1.url) == ("http://h:8000@0", "http://h:8000@1")
    assert r0.base_url == r1.base_url == "http://h:8000"
    assert (r1.host, r1.port) == ("h", 8000)
    assert reg.find_url("http://h:8000@1") is r1 and reg.find_url("http://h:8000") is None
    assert reg.at_address("http://h:8000/") == [r0, r1]


# -- events

def test_listeners_receive_serializable_records():
    reg = WorkerRegistry()
    got, pairs = [], []
    reg.subscribe(got.append)
    reg.subscribe(lambda rec, w: pairs.append((rec.event, w)), with_worker=True)
    w = Worker("http://h:1", ("m",), "w1", "prefill", dp_rank=3)
    reg.add(w)
    reg.set_status(w, READY)
    reg.set_status(w, READY)                # no change, no event
    reg.set_breaker_open(w, True)
    reg.set_models(w, ("m", "n"), [])
    reg.remove("w1")
    assert got == [
        E.WorkerAdded("w1", "http://h:1@3", "http://h:1", ("m",), "prefill", PENDING),
        E.StatusChanged("w1", READY),
        E.BreakerChanged("w1", True),
        E.WorkerRemoved("w1", "http://h:1@3", ("m",), "prefill"),
        E.WorkerAdded("w1", "http://h:1@3", "http://h:1", ("m", "n"), "prefill", READY),
        E.WorkerRemoved("w1", "http://h:1@3", ("m", "n"), "prefill"),
    ]
    assert [e for e, _ in pairs][0] == ADDED and pairs[-1] == (REMOVED, w)   # the removed worker itself
    for rec in got:
        assert E.from_dict(orjson.loads(orjson.dumps(rec.to_dict()))) == rec
    with pytest.raises(AttributeError):
        got[0].status = FAILED  # frozen


def test_every_record_round_trips_and_holds_only_plain_values():
    samples = [
        E.WorkerAdded("w", "u@1", "u", ("a", "b"), "regular", "ready"), E.WorkerRemoved("w", "u", (), "decode"),
        E.StatusChanged("w", "failed"), E.BreakerChanged("w", False), E.HealthChecked("w", "u", "regular", True),
        E.BreakerTransition("w", "u", "closed", "open"), E.DiscoverySynced("file", 0.25),
        E.DiscoveryChanged("kubernetes", "deregistration", "removed"), E.LoadPolled("w", "u", "poll"),
    ]
    assert {type(r) for r in samples} == set(E.RECORDS.values())
    for rec in samples:
        d = rec.to_dict()
        assert d["type"] == rec.event
        assert E.from_dict(orjson.loads(orjson.dumps(d))) == rec
        for k, v in d.items():
            assert isinstance(v, (str, int, float, bool, list)), (k, v)


@pytest.mark.parametrize("bad", [
    {"type": "nope"}, {"type": "status_changed", "worker_id": "w"},
    {"type": "status_changed", "worker_id": "w", "status": "ready", "extra": 1},
    {"type": "breaker_changed", "worker_id": "w", "open": "yes"},
    {"type": "discovery_synced", "source": "file", "seconds": True},
    {"type": "worker_removed", "worker_id": "w", "url": "u", "models": "m", "worker_type": "regular"},
    {"type": "worker_removed", "worker_id": 1, "url": "u", "models": [], "worker_type": "regular"},
    ["not", "a", "dict"],
])
def test_from_dict_rejects_malformed_records(bad):
    with pytest.raises(ValueError):
        E.from_dict(bad)


def test_event_bus_delivers_in_order():
    bus = E.EventBus()
    seen = []
    first = lambda r: seen.append(("first", r.event))  # noqa: E731
    bus.subscribe(first)
    bus.subscribe(lambda r: seen.append(("second", r.event)))
    bus.emit(E.DiscoverySynced("file", 1.0))
    bus.unsubscribe(first)
    bus.emit(E.StatusChanged("w", "ready"))
    assert seen == [("first", "discovery_synced"), ("second", "discovery_synced"), ("second", "status_changed")]
