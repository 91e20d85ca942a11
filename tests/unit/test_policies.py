"""Routing policies, sans-I/O: fake requests, real ``Worker`` records (no sockets, no loop),
deterministic seeds, an injected clock. Hypothesis where a rule is a property (consistent
hashing's minimal movement, manual's bookkeeping, every policy choosing a candidate).

cache_aware runs on both radix-tree twins (ids "py" and "c").
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.config import build_config
from smg.config.schema import POLICIES
from smg.routing import policies
from smg.routing.policies import FACTORIES


def policy_classes() -> dict:
    """The policies beyond round_robin and random."""
    return {n: c for n, c in FACTORIES.items() if n not in ("round_robin", "random")}
from smg.routing.bucket import L_MAX, BucketPolicy
from smg.routing.radix import NODE_BYTES, SLOT_BYTES
from smg.routing.cache_aware import EVICT_OVERSHOOT, CacheAwarePolicy
from smg.routing.consistent_hashing import ConsistentHashingPolicy, parse_index
from smg.routing.hash_ring import VNODES, HashRing, hash64
from smg.routing.least_load import CandidateIndex, LeastLoadPolicy, config_value, least_loaded
from smg.routing.manual import MAX_WORKERS_PER_KEY, ManualPolicy
from smg.routing.power_of_two import PowerOfTwoPolicy
from smg.routing.prefix_hash import PrefixHashPolicy
from smg.routing.radix import StringTreeC, StringTreePy, TokenTreeC, TokenTreePy
from smg.routing.text import routing_text
from smg.testing.twins import twin_params
from smg.workers.registry import WorkerRegistry
from smg.workers.worker import READY, Worker

CONF_TIGHT = build_config({"balance_abs_threshold": 2, "balance_rel_threshold": 1.2})
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Req:
    """What a policy sees of a request (the interface in smg/routing/policy.py, which the
    request context, smg/server/context.py, implements)."""

    def __init__(self, text: str = "", headers: dict | None = None, body: dict | None = None,
                 path: bytes = b"/v1/completions", tokens: list | None = None) -> None:
        self.tokens = tokens
        self.body = body if body is not None else {"model": "m", "prompt": text}
        self.path = path
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    def routing_text(self) -> str:
        return routing_text(self.path, self.body)

    def routing_tokens(self):
        return self.tokens

    def header(self, name: bytes):
        for n, v in self.headers:
            if n == name:
                return v
        return None


def make_workers(n: int, prefix: str = "w") -> list:
    return [Worker(f"http://10.0.{i // 250}.{i % 250}:8000", worker_id=f"{prefix}{i}") for i in range(n)]


def add_all(policy, workers):
    for w in workers:
        policy.on_worker_added(w)
    return policy


def cfg(**kw):
    return SimpleNamespace(**kw)


# -- shared helpers ------------------------------------------------------------------------


def test_least_loaded_tie_breaks_on_processed_then_index():
    ws = make_workers(4)
    for w, (load, done) in zip(ws, [(3, 0), (1, 9), (1, 2), (1, 2)]):
        w.inflight, w.processed = load, done
    assert least_loaded(ws) is ws[2]
    ws[3].processed = 1
    assert least_loaded(ws) is ws[3]


def test_candidate_index_rebuilds_on_new_list_only():
    ws = make_workers(3)
    idx = CandidateIndex()
    assert idx.refresh(ws) and not idx.refresh(ws)
    assert idx.get(ws, "w1") is ws[1]
    sub = ws[:2]
    assert idx.get(sub, "w2") is None and idx.get(sub, "w0") is ws[0]
    ws.pop()  # mutated in place: the length guard notices
    assert idx.get(ws, "w2") is None


def test_config_value_defaults_from_schema():
    assert config_value(None, "cache_threshold") == 0.3
    assert config_value(cfg(), "balance_abs_threshold") == 64
    assert config_value(cfg(max_tree_size=5), "max_tree_size") == 5
    assert config_value(build_config({"prefix_token_count": 8}), "prefix_token_count") == 8


def test_factories_cover_every_schema_policy():
    classes = policy_classes()
    assert set(classes) | {"round_robin", "random"} == set(POLICIES)
    conf = build_config({})
    for name, cls in classes.items():
        assert cls.name == name
        p = cls(conf) if cls.takes_config else cls()
        assert p.name == name


@pytest.mark.parametrize("name", sorted(policy_classes()))
def test_every_policy_through_policy_registry(name, monkeypatch):
    """Per-model instances, added/removed events, and a choice among the candidates."""
    reg = WorkerRegistry()
    pr = policies.PolicyRegistry(reg, name, build_config({}))
    ws = [Worker(f"http://h{i}:1", models=("a",) if i < 3 else ("b",)) for i in range(5)]
    for w in ws:
        reg.add(w)
        reg.set_status(w, READY)
    assert sorted(pr.models()) == ["a", "b"]
    pol = pr.get("a")
    assert pol.name == name and pr.get("b") is not pol
    cands = reg.candidates("a")
    for i in range(20):
        req = Req(f"prompt {i} " * 10, headers={"x-smg-routing-key": f"k{i}"})
        assert pol.select(cands, req) in cands
        pol.maintain(100.0 + i)
    reg.remove(ws[0].id)
    cands = reg.candidates("a")
    for i in range(20):
        assert pol.select(cands, Req(f"prompt {i} " * 10, headers={"x-smg-routing-key": f"k{i}"})) in cands


@pytest.mark.parametrize("name", sorted(policy_classes()))
@HYP
@given(loads=st.lists(st.integers(0, 50), min_size=1, max_size=12), seed=st.integers(0, 2**16),
       texts=st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_property_choice_is_always_a_candidate(name, loads, seed, texts):
    cls = policy_classes()[name]
    pol = cls(CONF_TIGHT) if cls.takes_config else cls()
    ws = make_workers(len(loads) + 2)
    add_all(pol, ws)
    rng = random.Random(seed)
    cands = [w for w in ws if rng.random() < 0.8] or ws[:1]
    for w, load in zip(cands, loads):
        w.inflight = load
        if rng.random() < 0.5:
            w.engine = {"token_usage": rng.random(), "gen_throughput": rng.choice([0, 1500.0]),
                        "num_waiting_uncached_tokens": rng.randrange(5000)}
    for t in texts:
        choice = pol.select(cands, Req(t, headers={"x-smg-routing-key": t} if t.strip() else None))
        assert choice in cands


# -- cache_aware ---------------------------------------------------------------------------

TREES = twin_params(StringTreePy, StringTreeC)


@pytest.fixture(params=TREES)
def tree_cls(request):
    return request.param


def cache_aware(tree_cls, n=4, **kw):
    opts = {k: kw.pop(k) for k in ("affinity_under_imbalance",) if k in kw}
    pol = CacheAwarePolicy(cfg(**kw), tree_cls=tree_cls, **opts)
    ws = make_workers(n)
    return add_all(pol, ws), ws


SYSTEM = "You are a careful assistant. " * 20  # 580 chars


def test_cache_aware_miss_goes_to_least_loaded_with_processed_tie_break(tree_cls):
    pol, ws = cache_aware(tree_cls)
    ws[0].processed = 5
    ws[1].processed = 2
    ws[2].processed = 2
    ws[3].processed = 7
    assert pol.select(ws, Req("hello")) is ws[1]  # all idle: fewest processed, then earliest
    ws[3].processed = 0
    ws[3].inflight = 1
    assert pol.select(ws, Req("unrelated text")) is ws[1]


def test_cache_aware_repeated_prefix_sticks_to_owner(tree_cls):
    pol, ws = cache_aware(tree_cls)
    first = pol.select(ws, Req(SYSTEM + "question one"))
    first.processed += 1
    for i in range(5):
        # others are less loaded (never processed) but the match wins
        assert pol.select(ws, Req(SYSTEM + f"question {i} and more")) is first
    assert pol.tree.match_tenant(SYSTEM + "question 4 and more", first.id) == len(SYSTEM + "question 4 and more")


def test_cache_aware_low_match_rate_goes_to_least_loaded(tree_cls):
    pol, ws = cache_aware(tree_cls, cache_threshold=0.5)
    owner = pol.select(ws, Req("abcdefghij"))
    owner.processed = 10
    # matched 10 of 30 chars: 0.33 <= 0.5 -> least loaded (not the owner)
    assert pol.select(ws, Req("abcdefghij" + "x" * 20)) is not owner
    owner2 = pol.select(ws, Req("klmnopqrst"))
    owner2.processed = 10
    # matched 10 of 15: 0.67 > 0.5 -> owner
    assert pol.select(ws, Req("klmnopqrst" + "y" * 5)) is owner2


def test_cache_aware_threshold_is_strict(tree_cls):
    pol, ws = cache_aware(tree_cls, cache_threshold=0.5)
    owner = pol.select(ws, Req("abcde"))
    owner.processed = 10
    assert pol.select(ws, Req("abcdeXXXXX")) is not owner  # rate exactly 0.5: not above


def test_cache_aware_hot_owner_spills_and_records_under_spill_target(tree_cls):
    pol, ws = cache_aware(tree_cls, balance_abs_threshold=2, balance_rel_threshold=1.5)
    text = SYSTEM + "q"
    owner = pol.select(ws, Req(text))
    owner.inflight = 3  # 3 - 0 > 2 and 3 > 0 * 1.5: imbalanced, and the owner is the hot one
    spill = pol.select(ws, Req(text))
    assert spill is not owner and spill.inflight == 0
    assert pol.tree.match_tenant(text, spill.id) == len(text)
    owner.inflight = 2  # 2 - 0 > 2 is false: balanced again, back to the owner (or spill: both hold it)
    assert pol.select(ws, Req(text)) in (owner, spill)


def test_cache_aware_keeps_affinity_when_someone_else_is_hot(tree_cls):
    text = SYSTEM + "conversation"
    for affinity, expect_owner in ((True, True), (False, False)):
        pol, ws = cache_aware(tree_cls, balance_abs_threshold=4, balance_rel_threshold=1.5,
                              affinity_under_imbalance=affinity)
        owner = pol.select(ws, Req(text))
        assert owner is ws[0]
        owner.inflight = 2
        ws[3].inflight = 20  # fleet imbalanced (20 - 0 > 4) because of ws[3], not the owner
        got = pol.select(ws, Req(text + " turn two"))
        assert (got is owner) is expect_owner
        if not expect_owner:  # SMG 1.9: straight to the least-loaded worker
            assert got is ws[1]


def test_cache_aware_owner_not_a_candidate(tree_cls):
    pol, ws = cache_aware(tree_cls)
    owner = pol.select(ws, Req(SYSTEM))
    rest = [w for w in ws if w is not owner]
    got = pol.select(rest, Req(SYSTEM + "more"))
    assert got in rest
    assert pol.select(ws, Req(SYSTEM + "more")) in (owner, got)


def test_cache_aware_worker_removed_drops_its_tree(tree_cls):
    pol, ws = cache_aware(tree_cls)
    owner = pol.select(ws, Req(SYSTEM))
    assert owner.id in pol.tree.tenants()
    pol.on_worker_removed(owner)
    assert owner.id not in pol.tree.tenants()


def test_cache_aware_empty_text(tree_cls):
    pol, ws = cache_aware(tree_cls)
    ws[0].inflight = 1
    assert pol.select(ws, Req("")) is ws[1]
    assert pol.tree.size() == 0


def test_cache_aware_eviction_bounds_the_whole_model_tree(tree_cls):
    """The bound counts the tree's estimated memory in bytes (nodes, labels, holders)."""
    pol, ws = cache_aware(tree_cls, max_tree_size=5000, eviction_interval_secs=60)
    pol.maintain(0.0)  # schedules the first eviction at t=60
    one = NODE_BYTES + 32 + SLOT_BYTES  # a 30-char prompt whose first char is 3 UTF-8 bytes
    for i in range(40):
        w = pol.select(ws, Req(chr(0x4e00 + i) + "z" * 29))
        w.processed += 1
    assert pol.tree.mem_size() == 40 * one
    pol.maintain(30.0)  # neither due nor past the overshoot bound
    assert pol.tree.mem_size() == 40 * one
    pol.maintain(60.0)
    assert pol.tree.mem_size() <= 5000
    for i in range(40, 100):  # a burst between sweeps: trimmed by the inserts themselves
        pol.select(ws, Req(chr(0x4e00 + i) + "z" * 29))
        assert pol.tree.mem_size() <= 5000 * EVICT_OVERSHOOT
    assert pol.tree.node_count() <= 5000 * EVICT_OVERSHOOT / one


def test_cache_aware_inserts_at_most_a_budget_of_one_prompt(tree_cls):
    pol, ws = cache_aware(tree_cls, max_tree_size=4096, eviction_interval_secs=60)
    pol.select(ws, Req("a" * 100))
    pol.select(ws, Req("b" * 100_000))  # far larger than the whole budget
    assert 0 < pol.tree.mem_size() <= 4096 * EVICT_OVERSHOOT
    assert pol.tree.match("a" * 100)[0] == 100  # the earlier prompt survived the big one


@HYP
@given(loads=st.lists(st.integers(0, 20), min_size=2, max_size=8), ops=st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 7)), min_size=1, max_size=30))
def test_property_cache_aware_smg_mode_rules(loads, ops):
    """SMG mode: imbalanced fleet -> the least-loaded worker; otherwise a cache hit's owner
    or the least-loaded worker; the choice always holds the text afterwards."""
    pol = CacheAwarePolicy(cfg(balance_abs_threshold=3, balance_rel_threshold=1.5),
                           affinity_under_imbalance=False)
    ws = make_workers(len(loads))
    add_all(pol, ws)
    for w, load in zip(ws, loads):
        w.inflight = load
    for conv, bump in ops:
        text = f"system prompt {conv} " * 8 + f"tail {bump}"
        lo = min(w.inflight for w in ws)
        hi = max(w.inflight for w in ws)
        before, tenant = pol.tree.match(text)
        got = pol.select(ws, Req(text))
        if hi - lo > 3 and hi > lo * 1.5:
            assert got is least_loaded(ws)
        elif before / len(text) > 0.3:
            assert got.id == tenant
        else:
            assert got is least_loaded(ws)
        assert pol.tree.match_tenant(text, got.id) == len(text)
        ws[bump % len(ws)].inflight += 1


# -- power_of_two --------------------------------------------------------------------------


def test_power_of_two_single_and_pair():
    ws = make_workers(2)
    pol = PowerOfTwoPolicy(seed=1)
    assert pol.select(ws[:1], Req()) is ws[0]
    ws[0].inflight = 3
    assert all(pol.select(ws, Req()) is ws[1] for _ in range(50))
    ws[0].inflight, ws[1].inflight = 0, 3
    assert all(pol.select(ws, Req()) is ws[0] for _ in range(50))


def test_power_of_two_draws_two_distinct_workers():
    ws = make_workers(3)
    for w, load in zip(ws, (0, 1, 2)):
        w.inflight = load
    pol = PowerOfTwoPolicy(seed=7)
    picks = [pol.select(ws, Req()) for _ in range(3000)]
    assert ws[2] not in picks  # the worst worker would only win against itself
    share = picks.count(ws[0]) / len(picks)
    assert 0.6 < share < 0.73  # ws[0] is in 2 of the 3 pairs


def test_power_of_two_prefers_engine_token_usage_when_both_report():
    ws = make_workers(2)
    pol = PowerOfTwoPolicy(seed=3)
    ws[0].inflight, ws[1].inflight = 0, 5
    ws[0].engine = {"token_usage": 0.9}
    ws[1].engine = {"token_usage": 0.2}
    assert all(pol.select(ws, Req()) is ws[1] for _ in range(30))
    ws[1].engine = None  # one without a report: both fall back to in-flight
    assert all(pol.select(ws, Req()) is ws[0] for _ in range(30))
    ws[1].engine = {"token_usage": 0.9}  # equal usage: in-flight breaks the tie
    assert all(pol.select(ws, Req()) is ws[0] for _ in range(30))


def test_power_of_two_ties_go_to_first_drawn():
    ws = make_workers(2)
    pol = PowerOfTwoPolicy(seed=11)
    picks = [pol.select(ws, Req()) for _ in range(2000)]
    assert 0.4 < picks.count(ws[0]) / 2000 < 0.6


# -- hash ring / consistent_hashing --------------------------------------------------------


def test_hash64_is_stable():
    assert hash64(b"abc") == hash64(b"abc") != hash64(b"abd")
    assert 0 <= hash64(b"") < 2**64


def test_ring_points_and_batched_rebuild():
    r = HashRing()
    for i in range(5):
        r.add(f"http://h{i}:1")
    assert len(r) == 5 * VNODES
    r.add("http://h0:1")  # same URL twice: counted, not doubled
    assert len(r) == 5 * VNODES
    r.remove("http://h0:1")
    assert len(r) == 5 * VNODES and "http://h0:1" in r.members()
    r.remove("http://h0:1")
    r.remove("http://h1:1")
    r.add("http://h1:1")
    r.remove("http://h9:1")  # unknown: ignored
    assert r.owner_url(123) is not None
    assert r._hashes == sorted(r._owner) and len(r) == 4 * VNODES


@HYP
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=40))
def test_property_ring_array_matches_points(ops):
    r = HashRing(vnodes=8)
    for i, (add, u) in enumerate(ops):
        (r.add if add else r.remove)(f"http://u{u}:1")
        if i % 3 == 0:
            r.owner_url(0)
    r.owner_url(0)
    assert r._hashes == sorted(r._owner)
    assert set(r._owner.values()) == set(r.members())


def chash(n=4, seed=0):
    ws = make_workers(n)
    return add_all(ConsistentHashingPolicy(seed=seed), ws), ws


def test_consistent_target_worker_header():
    pol, ws = chash()
    assert pol.select(ws, Req(headers={"X-SMG-Target-Worker": "2"})) is ws[2]
    assert pol.select(ws, Req(headers={"X-SMG-Target-Worker": " 0 "})) is ws[0]
    for bad in ("4", "-1", "x", "", "1.0", "99999999999"):
        assert pol.select(ws, Req(headers={"X-SMG-Target-Worker": bad})) is None
    # target wins over a routing key
    assert pol.select(ws, Req(headers={"X-SMG-Target-Worker": "3", "X-SMG-Routing-Key": "k"})) is ws[3]
    assert parse_index(b"12") == 12 and parse_index(b"") is None


def test_consistent_routing_key_is_sticky_and_spreads():
    pol, ws = chash()
    owners = {}
    for i in range(400):
        k = f"user-{i}"
        first = pol.select(ws, Req(headers={"X-SMG-Routing-Key": k}))
        assert all(pol.select(ws, Req(headers={"X-SMG-Routing-Key": k})) is first for _ in range(3))
        owners[k] = first
    counts = [list(owners.values()).count(w) for w in ws]
    assert min(counts) > 50  # 100 expected each


def test_consistent_implicit_key_order_and_body_key():
    pol, ws = chash(n=16)
    def owner_of(key):
        return pol.ring.lookup(hash64(key.encode()), ws)
    cases = [
        ({"Authorization": "Bearer a", "X-Forwarded-For": "1.2.3.4", "Cookie": "c=1"}, "Bearer a"),
        ({"Authorization": "", "X-Forwarded-For": "1.2.3.4", "Cookie": "c=1"}, "1.2.3.4"),
        ({"Cookie": "c=1"}, "c=1"),
        ({"X-SMG-Routing-Key": "rk", "Authorization": "Bearer a"}, "rk"),
    ]
    for headers, key in cases:
        assert pol.select(ws, Req(headers=headers)) is owner_of(key)
    body = {"model": "m", "prompt": "x", "prompt_cache_key": "conv-17"}
    assert pol.select(ws, Req(headers={"Authorization": "Bearer a"}, body=body)) is owner_of("conv-17")
    assert pol.select(ws, Req(headers={"X-SMG-Routing-Key": "rk"}, body=body)) is owner_of("rk")


def test_consistent_no_key_is_random():
    pol, ws = chash()
    assert {pol.select(ws, Req()) for _ in range(200)} == set(ws)


def test_consistent_skips_non_candidates_and_returns():
    pol, ws = chash(n=5)
    keys = [f"k{i}" for i in range(300)]
    before = {k: pol.select(ws, Req(headers={"X-SMG-Routing-Key": k})) for k in keys}
    down = ws[2]
    healthy = [w for w in ws if w is not down]
    during = {k: pol.select(healthy, Req(headers={"X-SMG-Routing-Key": k})) for k in keys}
    for k in keys:
        assert during[k] is not down
        if before[k] is not down:
            assert during[k] is before[k]  # only the unhealthy worker's keys move
    after = {k: pol.select(ws, Req(headers={"X-SMG-Routing-Key": k})) for k in keys}
    assert after == before  # status changes never touched the ring


def test_consistent_lazily_created_policy_learns_candidates():
    pol = ConsistentHashingPolicy(seed=1)  # never told about any worker
    ws = make_workers(3)
    got = pol.select(ws, Req(headers={"X-SMG-Routing-Key": "abc"}))
    assert got in ws and len(pol.ring) == 3 * VNODES
    assert pol.select(ws, Req(headers={"X-SMG-Routing-Key": "abc"})) is got


@HYP
@given(n=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_property_consistent_minimal_movement(n, seed):
    rng = random.Random(seed)
    ws = make_workers(n + 1)
    old, new = ws[:n], ws
    pol = add_all(ConsistentHashingPolicy(seed=0), old)
    keys = [f"key-{rng.getrandbits(48)}" for _ in range(600)]
    def assign(cands):
        return {k: pol.select(cands, Req(headers={"X-SMG-Routing-Key": k})) for k in keys}
    a = assign(old)
    pol.on_worker_added(ws[n])
    b = assign(new)
    moved = [k for k in keys if a[k] is not b[k]]
    assert all(b[k] is ws[n] for k in moved)  # keys only move to the new worker
    share = len(moved) / len(keys)
    expect = 1 / (n + 1)
    assert expect * 0.4 < share < expect * 1.8 + 0.03
    # removing a worker moves exactly its keys
    gone = ws[rng.randrange(n + 1)]
    pol.on_worker_removed(gone)
    rest = [w for w in ws if w is not gone]
    c = assign(rest)
    for k in keys:
        if b[k] is not gone:
            assert c[k] is b[k]
        else:
            assert c[k] is not gone


# -- prefix_hash ---------------------------------------------------------------------------


def prefix(n=4, **kw):
    kw.setdefault("prefix_token_count", 16)  # 64 characters hashed
    pol = PrefixHashPolicy(cfg(**kw))
    ws = make_workers(n)
    return add_all(pol, ws), ws


def test_prefix_hash_same_prefix_same_worker():
    pol, ws = prefix()
    head = "p" * 64
    first = pol.select(ws, Req(head + "tail one"))
    assert all(pol.select(ws, Req(head + f"tail {i}" * i)) is first for i in range(10))
    seen = {pol.select(ws, Req(f"{i:03d}" + "q" * 61)) for i in range(60)}
    assert len(seen) >= 3  # different prefixes spread


def test_prefix_hash_load_bound():
    pol, ws = prefix(prefix_hash_load_factor=1.25)
    text = "r" * 100
    owner = pol.select(ws, Req(text))
    others = [w for w in ws if w is not owner]
    # total 4: bound (4+1)/4*1.25 = 1.5625 -> owner with 1 stays, with 2 is skipped
    owner.inflight = 1
    for o, load in zip(others, (1, 1, 1)):
        o.inflight = load
    assert pol.select(ws, Req(text)) is owner
    owner.inflight = 2
    others[0].inflight = 0
    others[1].inflight = 1
    others[2].inflight = 1
    # total 4 again, owner 2 > 1.5625 -> least loaded
    assert pol.select(ws, Req(text)) is others[0]


def test_prefix_hash_abs_threshold_keyword():
    pol, ws = prefix()
    pol.balance_abs_threshold = 10
    text = "s" * 100
    owner = pol.select(ws, Req(text))
    owner.inflight = 5  # over the relative bound, but within 10 of the mean
    assert pol.select(ws, Req(text)) is owner


def test_prefix_hash_empty_text_least_loaded():
    pol, ws = prefix()
    ws[0].inflight = 2
    assert pol.select(ws, Req("")) is ws[1]


# -- routing on token ids (gRPC workers) ----------------------------------------------------


SYS_IDS = list(range(1000, 1300))   # a long shared prefix of token ids


@pytest.mark.parametrize("token_tree_cls", twin_params(TokenTreePy, TokenTreeC))
def test_cache_aware_routes_on_token_ids_in_their_own_tree(tree_cls, token_tree_cls):
    pol = CacheAwarePolicy(cfg(), tree_cls=tree_cls, token_tree_cls=token_tree_cls)
    ws = make_workers(4)
    add_all(pol, ws)
    first = pol.select(ws, Req("text A", tokens=SYS_IDS + [1, 2]))
    first.processed += 1
    for i in range(5):
        assert pol.select(ws, Req(f"unrelated text {i}", tokens=SYS_IDS + [7, i])) is first
    assert pol.token_tree.match_tenant(SYS_IDS + [7, 4], first.id) == len(SYS_IDS) + 2
    assert pol.tree.size() == 0   # token-routed requests leave the text tree alone
    # the same text without tokens is a text-tree miss: the least-loaded worker
    assert pol.select(ws, Req("text A")) is not first
    pol.on_worker_removed(first)
    assert pol.token_tree.tenant_size(first.id) == 0


def test_cache_aware_token_tree_is_bounded_by_the_budget():
    pol = CacheAwarePolicy(cfg(max_tree_size=20000), tree_cls=StringTreePy, token_tree_cls=TokenTreePy)
    ws = make_workers(2)
    add_all(pol, ws)
    for i in range(400):
        pol.select(ws, Req("", tokens=[i * 1000 + j for j in range(50)]))
    assert pol.token_tree.mem_size() <= 20000 * 1.5 + 50 * 4 * 8
    pol.evict()
    assert pol.token_tree.mem_size() <= 20000


def test_prefix_hash_on_token_ids():
    pol, ws = prefix(prefix_token_count=8)
    head = list(range(50, 58))
    first = pol.select(ws, Req("x", tokens=head + [1]))
    assert all(pol.select(ws, Req(f"other text {i}", tokens=head + list(range(i))) ) is first
               for i in range(10))
    seen = {pol.select(ws, Req("same text", tokens=[i] + head)) for i in range(60)}
    assert len(seen) >= 3   # the key is the ids, not the text
    ws[0].inflight = 2
    assert pol.select(ws, Req("x", tokens=[])) is ws[1]   # no ids: the least-loaded worker


# -- manual --------------------------------------------------------------------------------


def manual(mode="random", n=4, seed=5, **kw):
    pol = ManualPolicy(cfg(assignment_mode=mode, **kw), seed=seed)
    ws = make_workers(n)
    return add_all(pol, ws), ws


def key(k):
    return Req(headers={"X-SMG-Routing-Key": k})


def test_manual_key_sticks_and_never_rebalances():
    pol, ws = manual()
    first = pol.select(ws, key("s1"))
    first.inflight = 100
    assert all(pol.select(ws, key("s1")) is first for _ in range(20))
    more = ws + make_workers(4, prefix="x")
    assert pol.select(more, key("s1")) is first  # scale-up does not move keys


def test_manual_reassigns_when_worker_gone_and_bounds_history():
    pol, ws = manual()
    a = pol.select(ws, key("s"))
    rest = [w for w in ws if w is not a]
    b = pol.select(rest, key("s"))
    assert b is not a and pol.snapshot()[b"s"] == [a.id, b.id]
    assert pol.select(rest, key("s")) is b
    assert pol.select(ws, key("s")) is a  # first listed still present wins
    rest2 = [w for w in ws if w not in (a, b)]
    c = pol.select(rest2, key("s"))
    assert pol.snapshot()[b"s"] == [b.id, c.id] and len(pol.snapshot()[b"s"]) == MAX_WORKERS_PER_KEY


def test_manual_no_key_uses_assignment_mode_and_remembers_nothing():
    pol, ws = manual(mode="min_load")
    ws[0].inflight = 1
    assert pol.select(ws, Req()) is ws[1]
    assert pol.snapshot() == {}


def test_manual_min_load_and_min_group():
    pol, ws = manual(mode="min_load")
    for w, load in zip(ws, (3, 2, 0, 1)):
        w.inflight = load
    assert pol.select(ws, key("a")) is ws[2]
    pol, ws = manual(mode="min_group")
    got = [pol.select(ws, key(f"k{i}")) for i in range(8)]
    assert got == ws + ws  # fewest keys, then in-flight, then order
    ws[1].inflight = 1
    assert pol.select(ws, key("k8")) is ws[0]


def test_manual_random_mode_spreads():
    pol, ws = manual(mode="random")
    assert {pol.select(ws, key(f"r{i}")) for i in range(100)} == set(ws)


def test_manual_prompt_cache_key():
    pol, ws = manual()
    body = {"model": "m", "prompt": "x", "prompt_cache_key": "conv-9"}
    first = pol.select(ws, Req(body=body))
    assert all(pol.select(ws, Req(body=body)) is first for _ in range(10))
    assert b"conv-9" in pol.snapshot()
    # Authorization alone is not a manual key (too coarse)
    pol.select(ws, Req(headers={"Authorization": "Bearer t"}))
    assert list(pol.snapshot()) == [b"conv-9"]


def test_manual_ttl_with_injected_clock():
    pol, ws = manual(max_idle_secs=100)
    pol.select(ws, key("early"))  # before the first maintain: no time yet
    pol.maintain(1000.0)  # "early" is stamped 1000, not expired
    assert b"early" in pol.snapshot()
    pol.select(ws, key("a"))
    pol.maintain(1050.0)
    pol.select(ws, key("b"))
    pol.maintain(1101.0)  # early/a idle 101 s > 100: gone; b idle 51 s: kept
    assert list(pol.snapshot()) == [b"b"]
    pol.select(ws, key("b"))
    pol.maintain(1200.0)
    assert list(pol.snapshot()) == [b"b"]  # touched at 1101
    pol.maintain(1201.5)
    assert pol.snapshot() == {} and pol._groups == {}


def test_manual_max_keys_bound():
    pol = ManualPolicy(cfg(), seed=1, max_keys=3)
    ws = make_workers(2)
    add_all(pol, ws)
    for k in ("a", "b", "c"):
        pol.select(ws, key(k))
    pol.select(ws, key("a"))  # a is now most recent
    pol.select(ws, key("d"))
    assert sorted(pol.snapshot()) == [b"a", b"c", b"d"]


def test_manual_long_keys_are_digested():
    pol, ws = manual()
    long_key = "k" * 5000
    first = pol.select(ws, key(long_key))
    assert pol.select(ws, key(long_key)) is first
    (stored,) = pol.snapshot()
    assert len(stored) == 17 and stored.startswith(b"#")


def test_manual_rejects_unknown_mode():
    with pytest.raises(ValueError):
        ManualPolicy(cfg(assignment_mode="fastest"))


@HYP
@given(ops=st.lists(st.tuples(st.sampled_from("sgmt"), st.integers(0, 6)), max_size=60),
       mode=st.sampled_from(["random", "min_load", "min_group"]))
def test_property_manual_bookkeeping(ops, mode):
    pol = ManualPolicy(cfg(assignment_mode=mode, max_idle_secs=10), seed=2, max_keys=5)
    ws = make_workers(4)
    add_all(pol, ws)
    cands = list(ws)
    now = 0.0
    for op, x in ops:
        if op == "s":
            got = pol.select(cands, key(f"k{x}"))
            assert got in cands and got.id in pol.snapshot()[f"k{x}".encode()]
        elif op == "g":  # a worker leaves or comes back
            w = ws[x % 4]
            cands = [c for c in cands if c is not w] if w in cands and len(cands) > 1 else list(ws)
        elif op == "m":
            now += x * 3
            pol.maintain(now)
        else:
            ws[x % 4].inflight = x
        keys = pol.snapshot()
        assert len(keys) <= 5
        counts = {}
        for ids in keys.values():
            assert 1 <= len(ids) <= MAX_WORKERS_PER_KEY and len(set(ids)) == len(ids)
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
        assert counts == pol._groups


# -- bucket --------------------------------------------------------------------------------


def bucket(n=3, **kw):
    kw.setdefault("balance_abs_threshold", 10**9)  # no load balancing unless a test asks
    kw.setdefault("balance_rel_threshold", 1.0001)
    pol = BucketPolicy(cfg(**kw))
    ws = make_workers(n)
    return add_all(pol, ws), ws


def test_bucket_initial_even_split():
    pol, ws = bucket()
    gap = L_MAX // 3
    assert pol.starts == [0, gap, 2 * gap]
    assert pol.select(ws, Req("a" * 10)) is ws[0]
    assert pol.select(ws, Req("a" * gap)) is ws[1]
    assert pol.select(ws, Req("a" * 100_000)) is ws[2]  # the last range is open-ended


@pytest.mark.parametrize("lengths, starts", [
    ([5, 10, 15, 20, 24, 26], [0, 21, 27]),  # SMG test_adjust_boundary_1
    ([33, 34, 34], [0, 34, 68]),              # SMG test_load_balancing_conditions
])
def test_bucket_adjust_like_smg(lengths, starts):
    pol, ws = bucket(bucket_adjust_interval_secs=5)
    pol.maintain(0.0)
    for n in lengths:
        pol.select(ws, Req("a" * n))
    pol.maintain(5.0)
    assert pol.starts == starts


def test_bucket_hysteresis_and_window_expiry():
    pol, ws = bucket(bucket_adjust_interval_secs=5)
    pol.maintain(0.0)
    for n in (100, 200, 300):
        pol.select(ws, Req("b" * n))
    assert pol.adjust_boundaries()
    first = list(pol.starts)
    pol.select(ws, Req("b" * 250))  # per-range load 283 vs 200: within 2x
    assert not pol.adjust_boundaries() and pol.starts == first
    pol.maintain(6.0)  # everything recorded at t=0 is older than 5 s
    assert pol.total_chars == 0 and set(pol.loads().values()) == {0}


def test_bucket_imbalance_goes_to_fewest_chars():
    pol, ws = bucket(balance_abs_threshold=32, balance_rel_threshold=1.0001)
    assert pol.select(ws, Req("a" * 33)) is ws[0]  # 33 - 0 > 32 from now on
    got = [pol.select(ws, Req("a" * 33)) for _ in range(2)]
    assert got == [ws[1], ws[2]]
    pol, ws = bucket(balance_abs_threshold=30, balance_rel_threshold=2.0)
    pol.select(ws, Req("a" * 20))
    pol.select(ws, Req("a" * 8))
    assert pol.select(ws, Req("request")) is ws[0]  # 28 <= 30: not imbalanced


def test_bucket_owner_not_candidate_and_membership_change():
    pol, ws = bucket()
    assert pol.select(ws[1:], Req("a" * 5)) in ws[1:]
    pol.on_worker_removed(ws[0])
    assert pol.order == ["w1", "w2"] and pol.starts == [0, L_MAX // 2]
    w3 = Worker("http://x:1", worker_id="w3")
    pol.on_worker_added(w3)
    assert pol.order == ["w1", "w2", "w3"] and len(pol.starts) == 3
    with pytest.raises(ValueError):
        pol.set_boundaries([0, 5, 5])


def test_bucket_lazily_created_policy_learns_candidates():
    pol = BucketPolicy(cfg())
    ws = make_workers(2)
    assert pol.select(ws, Req("hello")) is ws[0]
    assert pol.order == ["w0", "w1"]


# -- least_load ----------------------------------------------------------------------------


def least(n=3, **kw):
    pol = LeastLoadPolicy(cfg(**kw))
    ws = make_workers(n)
    return add_all(pol, ws), ws


def test_least_load_dark_fleet_is_join_shortest_queue():
    pol, ws = least()
    for w, (load, done) in zip(ws, [(2, 0), (1, 5), (1, 3)]):
        w.inflight, w.processed = load, done
    assert pol.select(ws, Req()) is ws[2]


def test_least_load_score_formula():
    pol, ws = least(least_load_default_throughput=1000, least_load_kv_pressure_weight=0.15,
                    least_load_mean_prefill_tokens=100)
    ws[0].engine = {"num_waiting_uncached_tokens": 3000, "gen_throughput": 1000, "token_usage": 0.0}  # 3 s
    ws[1].engine = {"num_waiting_uncached_tokens": 1000, "gen_throughput": 0, "token_usage": 0.5}     # 1 + .15
    ws[2].engine = {"num_waiting_uncached_tokens": 0, "gen_throughput": 2000, "token_usage": 1.0}     # .15*999
    assert pol.select(ws, Req()) is ws[1]
    ws[2].engine = {"num_waiting_uncached_tokens": 0, "gen_throughput": 2000, "token_usage": 0.8}     # 0.6
    assert pol.select(ws, Req()) is ws[2]


def test_least_load_counts_dispatches_until_a_fresh_report():
    pol, ws = least(n=2, least_load_mean_prefill_tokens=1000)
    for w in ws:
        w.engine = {"num_waiting_uncached_tokens": 0, "gen_throughput": 1000, "token_usage": 0.0}
    picks = [pol.select(ws, Req()) for _ in range(4)]
    assert picks == [ws[0], ws[1], ws[0], ws[1]]  # each dispatch adds 1 s to the chosen one
    ws[1].engine = dict(ws[1].engine)  # fresh report from ws[1]: its pending tokens reset
    assert pol.select(ws, Req()) is ws[1]
    assert pol.select(ws, Req()) is ws[1]  # ws[0] still carries 2,000 pending tokens


def test_least_load_dark_worker_among_reporting_peers():
    pol, ws = least(n=2, least_load_mean_prefill_tokens=1000)
    ws[0].engine = {"num_waiting_uncached_tokens": 1500, "gen_throughput": 1000, "token_usage": 0.0}  # 1.5 s
    ws[1].inflight = 1  # dark: 1 * 1000 / 1000 = 1 s
    assert pol.select(ws, Req()) is ws[1]
    ws[1].inflight = 2  # 2 s
    assert pol.select(ws, Req()) is ws[0]


def test_least_load_forgets_removed_worker():
    pol, ws = least(n=2)
    ws[0].engine = {"token_usage": 0.1}
    pol.select(ws, Req())
    pol.on_worker_removed(ws[0])
    assert ws[0].id not in pol._state


def test_policy_registry_knows_the_registry_record_names():
    # routing sits below the workers layer, so it names the records it acts on itself
    from smg.workers.events import WorkerAdded, WorkerRemoved
    assert (policies.ADDED, policies.REMOVED) == (WorkerAdded.event, WorkerRemoved.event)
