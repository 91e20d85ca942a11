"""Conformance tests for the cache_aware radix trees: native (smg._native.radix) vs the
pure-Python twin (smg.routing.radix_py) vs a naive model.

Every unit test runs on both twins and on both trees (StringTree, TokenTree: the token
leg spells the same keys as code points). The stateful Hypothesis machines drive the
native tree, the twin and a naive model (per tenant, the set of keys it inserted) with
the same random operations and compare every observable result after every step.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from array import array
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import smg._native
from smg.routing import radix
from smg.routing.radix import StringTreeC, StringTreePy, TokenTreeC, TokenTreePy
from smg.testing.twins import twin_params


def _as_tokens(s: str) -> list[int]:
    return [ord(c) for c in s]


def _kinds() -> list:
    """(tree class, key converter) for each twin x tree, ids like "py-str", "c-tok"."""
    out = []
    for kind, conv, pair in (("str", str, (StringTreePy, StringTreeC)), ("tok", _as_tokens, (TokenTreePy, TokenTreeC))):
        for p in twin_params(*pair):
            cls = p.values[0]
            out.append(pytest.param((cls, conv), id=f"{p.id}-{kind}", marks=p.marks))
    return out


@pytest.fixture(params=_kinds())
def mk(request):
    """Returns (new_tree, k): ``k("abc")`` turns a test key into the tree's key type."""
    cls, conv = request.param
    return cls, conv


STRING = twin_params(StringTreePy, StringTreeC)
TOKEN = twin_params(TokenTreePy, TokenTreeC)


# -- unit tests: each operation on small hand-checked cases --------------------------------


def test_empty_tree(mk):
    cls, k = mk
    t = cls()
    assert t.size() == 0 and t.tenants() == [] and t.node_count() == 0
    assert t.match(k("abc")) == (0, None)
    assert t.match(k("")) == (0, None)
    t.insert(k(""), "a")  # ignored
    assert t.size() == 0 and t.tenants() == [] and t.tenant_size("a") == 0
    assert t.match_tenant(k("abc"), "a") == 0
    t.remove_tenant("nobody")
    assert t.evict(0) == 0
    t._check()


def test_insert_match_single(mk):
    cls, k = mk
    t = cls()
    t.insert(k("hello"), "a")
    assert t.match(k("hello world")) == (5, "a")
    assert t.match(k("hello")) == (5, "a")
    assert t.match(k("help")) == (3, "a")  # ends inside the edge
    assert t.match(k("x")) == (0, None)
    assert t.match(k("")) == (0, None)
    assert (t.size(), t.tenant_size("a"), t.node_count(), t.tenants()) == (5, 5, 1, ["a"])
    t._check()


def test_shared_prefixes_split_edges(mk):
    cls, k = mk
    t = cls()
    t.insert(k("hello"), "a")
    t.insert(k("help"), "a")  # "hello" -> "hel" + {"lo", "p"}
    assert t.node_count() == 3
    # distinct prefixes of a: h he hel hell hello help
    assert t.tenant_size("a") == 6 and t.size() == 6
    t.insert(k("he"), "b")  # "hel" -> "he" + "l"
    assert t.node_count() == 4
    assert t.size() == 8 and t.tenant_size("b") == 2
    assert t.match(k("hex")) == (2, "b")  # b touched "he" last
    assert t.match(k("hello")) == (5, "a")  # only a holds it
    assert t.match(k("helium")) == (3, "a")
    t.insert(k("hello"), "a")  # re-insert changes nothing but stamps
    assert (t.size(), t.node_count()) == (8, 4)
    t._check()


def test_size_counts_shared_prefix_once_per_tenant(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abc"), "a")
    t.insert(k("abc"), "b")
    t.insert(k("abd"), "b")
    assert t.tenant_size("a") == 3 and t.tenant_size("b") == 4
    assert t.size() == 7 == sum(t.tenant_size(x) for x in t.tenants())
    t._check()


def test_mru_tie_break(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abc"), "a")
    t.insert(k("abc"), "b")
    assert t.match(k("abc")) == (3, "b")
    t.insert(k("abc"), "a")
    assert t.match(k("abcz")) == (3, "a")
    # match_tenant is read-only: b stays older than a.
    assert t.match_tenant(k("abc"), "b") == 3
    assert t.match(k("abc")) == (3, "a")


def test_mru_is_judged_where_the_match_ends(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abcd"), "a")
    t.insert(k("abcd"), "b")
    t.insert(k("ab"), "a")  # splits "abcd"; refreshes a on "ab" only
    assert t.match(k("abz")) == (2, "a")  # a is newer on "ab" (refreshed again)
    assert t.match(k("abcd")) == (4, "b")  # but b is newer on "cd"
    assert t.match(k("abz")) == (2, "b")  # and that match refreshed b on "ab" too


def test_match_refreshes_only_the_chosen_tenant(mk):
    cls, k = mk
    t = cls()
    t.insert(k("xy"), "a")
    t.insert(k("xy"), "b")
    t.insert(k("q"), "c")
    assert t.match(k("xy")) == (2, "b")  # refreshes b
    t.insert(k("xy"), "a")
    assert t.match(k("x")) == (1, "a")
    # LRU among leaf holdings now: c ("q"), b ("xy"), a ("xy"): eviction removes c first.
    assert t.evict(t.size() - 1) == 1
    assert t.tenants() == ["a", "b"]
    assert t.evict(t.size() - 1) == 2
    assert t.tenants() == ["a"]


def test_match_tenant(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abcdef"), "a")
    t.insert(k("abxy"), "b")
    assert t.match_tenant(k("abcdzz"), "a") == 4
    assert t.match_tenant(k("abcdzz"), "b") == 2
    assert t.match_tenant(k("abxyz"), "b") == 4
    assert t.match_tenant(k("abxyz"), "a") == 2
    assert t.match_tenant(k("zz"), "a") == 0
    assert t.match_tenant(k("abc"), "nobody") == 0
    assert t.match_tenant(k(""), "a") == 0


def test_match_all_is_match_tenant_for_every_holder(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abcdef"), "a")
    t.insert(k("abxy"), "b")
    t.insert(k("abcdzz"), "c")
    assert t.match_all(k("abcdzq")) == {"a": 4, "b": 2, "c": 5}
    assert t.match_all(k("abxyzz")) == {"a": 2, "b": 4, "c": 2}
    assert t.match_all(k("zz")) == {} and t.match_all(k("")) == {}
    rng = random.Random(7)
    names = ["w%d" % i for i in range(6)]
    for _ in range(300):
        t.insert(k("".join(rng.choice("abc") for _ in range(rng.randint(1, 12)))), rng.choice(names))
    stamps = t.match(k("zzz"))  # a miss: nothing refreshed
    for _ in range(200):
        q = k("".join(rng.choice("abc") for _ in range(rng.randint(0, 14))))
        want = {n: t.match_tenant(q, n) for n in names + ["a", "b", "c"]}
        assert t.match_all(q) == {n: v for n, v in want.items() if v}
    assert stamps == (0, None)


def test_remove_tenant_frees_nodes(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abcdef"), "a")
    t.insert(k("abcxyz"), "b")
    t.insert(k("abq"), "a")
    t.insert(k("zzz"), "a")
    assert t.node_count() == 6  # ab, c, def, xyz, q, zzz
    t.remove_tenant("a")
    t._check()
    assert t.tenants() == ["b"] and t.size() == 6 == t.tenant_size("b")
    assert t.node_count() == 3  # ab, c, xyz (no re-merge: holdings stay node-granular)
    assert t.match(k("abcdef")) == (3, "b")
    assert t.match(k("zzz")) == (0, None)
    assert t.tenant_size("a") == 0 and t.match_tenant(k("abcdef"), "a") == 0
    t.remove_tenant("a")  # unknown now: no-op
    t.remove_tenant("b")
    assert (t.size(), t.node_count(), t.tenants()) == (0, 0, [])
    assert t.match(k("abc")) == (0, None)
    t.insert(k("abc"), "a")  # usable again
    assert t.match(k("abcd")) == (3, "a")
    t._check()


def test_eviction_order_lru_leaf_first(mk):
    cls, k = mk
    t = cls()
    t.insert(k("hello world"), "a")  # clock 1
    t.insert(k("hello there"), "b")  # clock 2
    t.insert(k("help"), "a")  # clock 3
    assert t.match(k("hello wx")) == (7, "a")  # clock 4, refreshes a on hel/lo /world
    # a: hel lo_ world p = 12, b: hel lo_ there = 11
    assert (t.size(), t.tenant_size("a"), t.tenant_size("b")) == (23, 12, 11)
    # LRU leaf holdings: b/there(2) then b/"lo "(2) -> size 15
    assert t.evict(16) == 8
    assert (t.size(), t.tenants()) == (15, ["a", "b"])
    assert t.match_tenant(k("hello there"), "b") == 3  # b keeps "hel" only
    # then b/hel(2), a/p(3): size 11
    assert t.evict(11) == 4
    assert t.tenants() == ["a"] and t.size() == 11
    assert t.match(k("help")) == (3, "a")
    # a/world (stamp 4) goes (5 units), then "lo " becomes a's leaf (3 units)
    assert t.evict(5) == 8
    assert t.size() == 3 and t.node_count() == 1
    t._check()


def test_eviction_keeps_the_other_tenants_shared_prefix(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abcdef"), "a")
    t.insert(k("abcxyz"), "b")
    t.insert(k("abcxyz"), "b")
    # a is LRU: its leaf "def" goes, then its "abc" holding; b keeps "abc".
    assert t.evict(6) == 6
    assert t.tenants() == ["b"] and t.size() == 6
    assert t.match(k("abcdef")) == (3, "b")
    assert t.node_count() == 2
    t._check()


def test_evict_bound_is_for_the_whole_tree(mk):
    # smg#2137: a per-tenant bound let the tree grow with the number of workers.
    cls, k = mk
    t = cls()
    rng = random.Random(7)
    for w in range(64):
        for _ in range(4):
            t.insert(k("".join(rng.choice("abcdefgh") for _ in range(25))), f"w{w}")
    total = t.size()
    assert total > 4000
    evicted = t.evict(1000)
    assert t.size() <= 1000 and evicted == total - t.size()
    assert t.size() == sum(t.tenant_size(x) for x in t.tenants())
    t._check()
    before = t.size()
    assert t.evict(0) == before
    assert (t.size(), t.node_count(), t.tenants()) == (0, 0, [])


def test_evict_arguments(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abc"), "a")
    assert t.evict(3) == 0 and t.evict(10**30) == 0
    with pytest.raises(ValueError):
        t.evict(-1)
    with pytest.raises(TypeError):
        t.evict(1.5)
    assert t.size() == 3


# -- memory accounting (radix_py rule 5) -----------------------------------------------------

NODE, SLOT = radix.NODE_BYTES, radix.SLOT_BYTES


def _label(k, text: str) -> int:
    """Bytes a label spelling ``text`` takes in the tree that ``k`` makes keys for."""
    return 4 * len(text) if k is _as_tokens else len(text.encode("utf-8", "surrogatepass"))


def test_memory_constants_agree():
    assert (radix.NODE_BYTES, radix.SLOT_BYTES) == (112, 24)
    if StringTreeC is not None:
        from smg._native import radix as native

        assert (native.NODE_BYTES, native.SLOT_BYTES) == (radix.NODE_BYTES, radix.SLOT_BYTES)


def test_mem_size_hand_checked(mk):
    cls, k = mk
    t = cls()
    assert t.mem_size() == 0
    t.insert(k("hello"), "a")
    assert t.mem_size() == NODE + _label(k, "hello") + SLOT
    t.insert(k("help"), "a")  # "hel" + {"lo", "p"}: the split adds a node and a copied slot
    assert t.mem_size() == 3 * NODE + _label(k, "hellop") + 3 * SLOT
    t.insert(k("help"), "b")  # b holds "hel" and "p": two slots, no node
    assert t.mem_size() == 3 * NODE + _label(k, "hellop") + 5 * SLOT
    t.insert(k("hé€😀\ud800"), "a")  # "h" + {"el", "é€😀\ud800"}; non-ASCII text is UTF-8
    assert t.node_count() == 5
    want = 5 * NODE + _label(k, "h" + "el" + "lo" + "p" + "é€😀\ud800") + 8 * SLOT
    assert t.mem_size() == want
    t._check()
    t.remove_tenant("b")  # frees b's slots only: a holds every node too
    assert t.mem_size() == want - 3 * SLOT
    t.remove_tenant("a")
    assert (t.mem_size(), t.node_count()) == (0, 0)
    t._check()


def test_evict_mem_order_and_bound(mk):
    # Same order as evict(): the LRU (tenant, leaf) holding goes first.
    cls, k = mk
    t = cls()
    t.insert(k("hello world"), "a")  # clock 1
    t.insert(k("hello there"), "b")  # clock 2
    t.insert(k("help"), "a")  # clock 3
    assert t.match(k("hello wx")) == (7, "a")  # refreshes a on hel/lo /world
    full = t.mem_size()
    # nodes: hel, "lo ", world, there, p; holdings: hel(a,b) "lo "(a,b) world(a) there(b) p(a)
    assert full == 5 * NODE + _label(k, "hello worldtherep") + 7 * SLOT
    # b/there (LRU leaf) goes whole: its node, its label and its slot
    assert t.evict_mem(full - 1) == NODE + _label(k, "there") + SLOT
    assert t.match_tenant(k("hello there"), "b") == 6
    # b/"lo " next: only b's slot goes (a still holds the node)
    assert t.evict_mem(t.mem_size() - 1) == SLOT
    assert t.match_tenant(k("hello there"), "b") == 3
    t._check()
    before = t.mem_size()
    assert t.evict_mem(before) == 0 and t.evict_mem(10**30) == 0
    assert t.evict_mem(0) == before
    assert (t.mem_size(), t.size(), t.node_count(), t.tenants()) == (0, 0, 0, [])


def test_evict_mem_bound_is_for_the_whole_tree(mk):
    cls, k = mk
    t = cls()
    rng = random.Random(7)
    for w in range(64):
        for _ in range(4):
            t.insert(k("".join(rng.choice("abcdefgh") for _ in range(25))), f"w{w}")
    full, units = t.mem_size(), t.size()
    freed = t.evict_mem(full // 3)
    assert t.mem_size() <= full // 3 and freed == full - t.mem_size()
    # one holding at a time: it stops within one node of the bound
    assert t.mem_size() > full // 3 - NODE - _label(k, "x" * 25) - SLOT
    assert t.size() < units
    t._check()


def test_evict_mem_arguments(mk):
    cls, k = mk
    t = cls()
    t.insert(k("abc"), "a")
    with pytest.raises(ValueError):
        t.evict_mem(-1)
    with pytest.raises(TypeError):
        t.evict_mem(1.5)
    assert t.mem_size() == NODE + _label(k, "abc") + SLOT


def _unique_prompt(i: int) -> str:
    # 100k distinct prompts that diverge early (a scrambled 8-hex-digit head) and share a
    # little structure after it, as chat prompts from many users do.
    h = (i * 2654435761) & 0xFFFFFFFF  # odd multiplier: a bijection on 32-bit ints
    return f"{h:08x} user {i % 97} asks: question number {i}"


@pytest.mark.parametrize("tree_cls", STRING)
def test_cache_aware_bounds_memory_of_100k_unique_prompts(tree_cls):
    """The soak that found the char bound wanting: 100,000 unique prompts through the
    policy's insert path, no sweep at all. After every eviction the policy triggers, the
    accounted size is within the budget; between evictions it stays under the early-trim
    line (plus the prompt just inserted); the nodes stay bounded too."""
    from smg.routing.cache_aware import EVICT_OVERSHOOT, CacheAwarePolicy

    budget = 64 * 1024
    pol = CacheAwarePolicy(SimpleNamespace(max_tree_size=budget), tree_cls=tree_cls)
    tree = pol.tree
    one_prompt = NODE + 64 + 2 * SLOT + NODE  # a leaf and at most one split
    evictions = 0
    peak = 0
    prev = 0
    for i in range(100_000):
        pol.record(_unique_prompt(i), f"w{i % 8}")
        mem = tree.mem_size()
        if mem < prev:  # unique prompts only grow the tree: this was an eviction
            evictions += 1
            assert mem <= budget, (i, mem)
        assert mem <= budget * EVICT_OVERSHOOT + one_prompt, (i, mem)
        peak = max(peak, mem)
        prev = mem
    assert evictions >= 100  # ~100k prompts x ~200 accounted bytes / (budget / 2)
    assert tree.node_count() * NODE <= peak
    tree._check()


@pytest.mark.parametrize("tree_cls", STRING)
def test_cache_aware_periodic_sweep_trims_to_budget(tree_cls):
    from smg.routing.cache_aware import CacheAwarePolicy

    pol = CacheAwarePolicy(SimpleNamespace(max_tree_size=10_000, eviction_interval_secs=60), tree_cls=tree_cls)
    pol.maintain(0.0)  # schedules the first trim at t=60
    for i in range(80):  # ~80 x 170 accounted bytes: past the budget, not past 1.5x
        pol.record(_unique_prompt(i)[:30], "w0")
    over = pol.tree.mem_size()
    assert 10_000 < over <= 15_000
    pol.maintain(30.0)  # not due
    assert pol.tree.mem_size() == over
    pol.maintain(60.0)
    assert pol.tree.mem_size() <= 10_000


_RSS_CHILD = """
import resource, sys
from types import SimpleNamespace
from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.radix import StringTreeC
body = "".join(chr(97 + (i * 7919) % 26) for i in range(2000))
pol = CacheAwarePolicy(SimpleNamespace(max_tree_size=1 << 20), tree_cls=StringTreeC)
def prompt(i):
    h = (i * 2654435761) & 0xFFFFFFFF
    j = (i * 31) % 1000
    return "%08x " % h + body[j:j + 500]
for i in range(2000):  # warm up: allocator pools, the descent scratch, the tree to budget
    pol.record(prompt(i), "w%d" % (i % 8))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range(2000, 100_000):
    pol.record(prompt(i), "w%d" % (i % 8))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak, pol.tree.mem_size(), pol.tree.node_count())
"""


def test_native_tree_rss_stays_bounded():
    """RSS-style check of the native tree (tracemalloc cannot see what RSS sees): 100k
    unique ~510-char prompts (~50 MB of text, ~65 MB if it were all kept) through a
    1 MiB budget in a fresh interpreter; the peak RSS grows by a few MiB at most. The
    margin is deliberately loose (allocator and interpreter noise), an unbounded tree
    would exceed it several times over."""
    if StringTreeC is None:
        pytest.skip("native extension not built")
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("SMG_NO_EXTENSIONS", None)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD], capture_output=True, text=True, timeout=120, env=env, check=True
    ).stdout.split()
    base_kib, peak_kib, mem, nodes = map(int, out)
    assert mem <= (1 << 20) * 1.5 + 4096
    assert peak_kib - base_kib < 16 * 1024, (base_kib, peak_kib, mem, nodes)


@pytest.mark.parametrize("cls", STRING)
def test_string_tree_type_errors(cls):
    t = cls()
    for bad in (b"abc", ["a"], None, 3):
        with pytest.raises(TypeError):
            t.insert(bad, "a")
        with pytest.raises(TypeError):
            t.match(bad)
    for bad_tenant in (None, b"a", 1):
        with pytest.raises(TypeError):
            t.insert("abc", bad_tenant)
        with pytest.raises(TypeError):
            t.match_tenant("abc", bad_tenant)
        with pytest.raises(TypeError):
            t.remove_tenant(bad_tenant)
        with pytest.raises(TypeError):
            t.tenant_size(bad_tenant)
    assert t.size() == 0


@pytest.mark.parametrize("cls", STRING)
def test_string_tree_units_are_code_points(cls):
    t = cls()
    t.insert("aé€😀x", "a")  # 1-, 2-, 3- and 4-byte UTF-8 code points
    assert t.size() == 5
    assert t.match("aé€😀y") == (4, "a")
    assert t.match("aé€😁") == (3, "a")  # differs in the last byte of the 4-byte sequence
    t.insert("aè", "b")  # é and è share their UTF-8 lead byte
    assert t.node_count() == 3
    assert t.match("aê") == (1, "b")
    assert t.match("aè") == (2, "b")
    t.insert("abc", "c")  # ASCII key (read in place natively) next to non-ASCII labels
    assert t.match("abcé") == (3, "c")
    t.insert("h\ud800z", "d")  # lone surrogates are str too
    assert t.match("h\ud800y") == (2, "d")
    assert t.match("h\udc00") == (1, "d")
    t._check()


@pytest.mark.parametrize("cls", TOKEN)
def test_token_tree_accepts_sequences(cls):
    t = cls()
    t.insert([1, 2, 3, 4], "a")
    forms = [
        [1, 2, 3, 9],
        (1, 2, 3, 9),
        array("I", [1, 2, 3, 9]),
        array("q", [1, 2, 3, 9]),
        array("H", [1, 2, 3, 9]),
        array("b", [1, 2, 3, 9]),
        memoryview(array("I", [1, 2, 3, 9])),
        range(1, 4),
        iter([1, 2, 3, 9]),
        [True, 2, 3],  # bool is an int
    ]
    want = [3] * len(forms)
    for form, n in zip(forms, want):
        assert t.match(form) == (n, "a"), form
    t.insert(array("L", [1, 2, 3, 4, 5]), "b")
    assert t.match((1, 2, 3, 4, 5, 6)) == (5, "b")
    assert t.size() == 9


@pytest.mark.parametrize("cls", TOKEN)
def test_token_tree_numpy(cls):
    np = pytest.importorskip("numpy")
    t = cls()
    t.insert(np.array([5, 6, 7], dtype=np.int64), "a")
    assert t.match(np.array([5, 6, 8], dtype=np.uint32)) == (2, "a")
    assert t.match(np.arange(10, dtype=np.int64)[5:]) == (3, "a")
    assert t.match(np.array([5, 6, 7, 8, 9, 10])[::2]) == (1, "a")  # not contiguous
    assert t.match([np.int64(5), np.uint16(6)]) == (2, "a")
    with pytest.raises(OverflowError):
        t.match(np.array([5, -1], dtype=np.int64))
    with pytest.raises(OverflowError):
        t.match(np.array([5, 2**33], dtype=np.uint64))
    with pytest.raises(TypeError):
        t.match(np.array([5.0, 6.0]))


@pytest.mark.parametrize("cls", TOKEN)
def test_token_tree_errors(cls):
    t = cls()
    for bad, exc in (
        ("abc", TypeError),
        (b"abc", TypeError),
        (bytearray(b"abc"), TypeError),
        (None, TypeError),
        (5, TypeError),
        ([1, 2.5], TypeError),
        ([1, "2"], TypeError),
        ([1, None], TypeError),
        ([1, -1], OverflowError),
        ([1, 2**32], OverflowError),
        (array("d", [1.0]), TypeError),
        (array("q", [1, -5]), OverflowError),
        (array("Q", [2**40]), OverflowError),
    ):
        with pytest.raises(exc):
            t.insert(bad, "a")
        with pytest.raises(exc):
            t.match(bad)
    assert t.size() == 0 and t.tenants() == []
    t.insert([0, 2**32 - 1], "a")  # the full uint32 range is fine
    assert t.match([0, 2**32 - 1, 7]) == (2, "a")


@pytest.mark.parametrize("cls", TOKEN)
def test_token_ids_differing_in_high_bytes(cls):
    # 1, 257 and 65537 share low bytes: the native byte compare must round down to a token.
    t = cls()
    t.insert([7, 1, 1], "a")
    t.insert([7, 257], "b")
    t.insert([7, 65537, 3], "c")
    assert t.node_count() == 4
    assert t.match([7, 257, 1]) == (2, "b")
    assert t.match([7, 1 + (5 << 24)]) == (1, "b")  # b was refreshed on "7" just above
    assert t.match_tenant([7, 65537, 3], "a") == 1


def test_max_key_units_agree():
    assert radix.MAX_KEY_UNITS == 1 << 28
    if StringTreeC is not None:
        from smg._native import radix as native

        assert native.MAX_KEY_UNITS == radix.MAX_KEY_UNITS


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_memory_shrinks_on_remove_and_evict(mk):
    cls, k = mk
    rng = random.Random(3)
    keys = ["".join(rng.choice("abcdefghij") for _ in range(200)) for _ in range(300)]
    keys = [k(x) for x in keys]
    tracemalloc.start()
    try:
        t = cls()
        base = _traced()
        for key in keys:
            t.insert(key, "a")
        for key in keys[::3]:
            t.insert(key, "b")
        full = _traced() - base
        assert full > 300 * 200  # at least a byte per stored unit is held somewhere
        t.remove_tenant("b")
        t.remove_tenant("a")
        after_remove = _traced() - base
        for key in keys:
            t.insert(key, "a")
        t.evict(0)
        after_evict = _traced() - base
    finally:
        tracemalloc.stop()
    assert t.node_count() == 0
    # Everything but a few scratch buffers (the native descent path) must be returned.
    assert after_remove < full * 0.05, (full, after_remove)
    assert after_evict < full * 0.05, (full, after_evict)


def test_require_extensions_exports_native_classes():
    if not smg._native.REQUIRE_EXTENSIONS:
        pytest.skip("SMG_REQUIRE_EXTENSIONS is not set")
    assert radix.StringTreeC is not None and radix.TokenTreeC is not None
    assert radix.StringTree is radix.StringTreeC
    assert radix.TokenTree is radix.TokenTreeC


# -- stateful differential tests ------------------------------------------------------------

TENANTS = ["w0", "w1", "w2", "w3"]
# Code points with 1- to 4-byte UTF-8 forms; é/è share a lead byte; a lone surrogate.
STR_ALPHABET = "abé\u00e8€😀\ud800"
# Token ids that share low-order bytes (1, 257, 65537) plus both ends of the uint32 range.
TOKEN_ALPHABET = [0, 1, 257, 65537, 2**32 - 1]


def _lcp(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Model:
    """Naive model: per tenant, the set of keys it inserted (as tuples)."""

    def __init__(self) -> None:
        self.keys: dict[str, set[tuple]] = {}

    def insert(self, key: tuple, tenant: str) -> None:
        if key:
            self.keys.setdefault(tenant, set()).add(key)

    def match_len(self, key: tuple) -> int:
        return max((_lcp(key, s) for ks in self.keys.values() for s in ks), default=0)

    def holders(self, prefix: tuple) -> set[str]:
        n = len(prefix)
        return {t for t, ks in self.keys.items() if any(s[:n] == prefix for s in ks)}

    def match_tenant(self, key: tuple, tenant: str) -> int:
        return max((_lcp(key, s) for s in self.keys.get(tenant, ())), default=0)

    def tenant_size(self, tenant: str) -> int:
        return len({s[:i] for s in self.keys.get(tenant, ()) for i in range(1, len(s) + 1)})


def _machine(py_cls, c_cls, keys, canon):
    """State machine over [twin, native?] + naive model. ``canon`` turns a drawn key
    into a plain str/list so stored keys can be cut and extended (most random keys would
    otherwise miss the tree)."""

    class RadixMachine(RuleBasedStateMachine):
        inserted = Bundle("inserted")

        def __init__(self) -> None:
            super().__init__()
            self.trees = [py_cls()] + ([c_cls()] if c_cls is not None else [])
            self.model = _Model()
            self.pristine = True  # no eviction has removed anything yet

        def _all(self, fn):
            results = [fn(t) for t in self.trees]
            assert all(r == results[0] for r in results), results  # native == twin
            return results[0]

        def _insert(self, key, tenant):
            self._all(lambda t: t.insert(key, tenant))
            self.model.insert(tuple(key), tenant)
            return canon(key)

        def _match(self, key):
            n, tenant = self._all(lambda t: t.match(key))
            want = self.model.match_len(tuple(key))
            if n == 0:
                assert tenant is None
            else:
                assert tenant in self.model.holders(tuple(key)[:n])
            if self.pristine:
                assert n == want
            else:
                assert n <= want

        def _match_tenant(self, key, tenant):
            n = self._all(lambda t: t.match_tenant(key, tenant))
            want = self.model.match_tenant(tuple(key), tenant)
            assert n == want if self.pristine else n <= want

        @rule(target=inserted, key=keys, tenant=st.sampled_from(TENANTS))
        def insert(self, key, tenant):
            return self._insert(key, tenant)

        @rule(target=inserted, base=inserted, cut=st.integers(0, 8), tail=keys, tenant=st.sampled_from(TENANTS))
        def insert_near_known(self, base, cut, tail, tenant):
            return self._insert(base[:cut] + canon(tail), tenant)

        @rule(key=keys)
        def match(self, key):
            self._match(key)

        @rule(base=inserted, cut=st.integers(0, 8), tail=keys)
        def match_near_known(self, base, cut, tail):
            self._match(base[:cut] + canon(tail))

        @rule(key=keys, tenant=st.sampled_from(TENANTS))
        def match_tenant(self, key, tenant):
            self._match_tenant(key, tenant)

        @rule(base=inserted, cut=st.integers(0, 8), tail=keys, tenant=st.sampled_from(TENANTS))
        def match_tenant_near_known(self, base, cut, tail, tenant):
            self._match_tenant(base[:cut] + canon(tail), tenant)

        @rule(tenant=st.sampled_from(TENANTS))
        def remove_tenant(self, tenant):
            self._all(lambda t: t.remove_tenant(tenant))
            self.model.keys.pop(tenant, None)

        @precondition(lambda self: self.trees[0].size() > 0)
        @rule(data=st.data())
        def evict(self, data):
            before = self.trees[0].size()
            # Mostly partial evictions (the interesting ones); sometimes down to empty.
            max_size = data.draw(
                st.one_of(st.integers(before // 2, before + 2), st.integers(0, before)), label="max_size"
            )
            evicted = self._all(lambda t: t.evict(max_size))
            after = self.trees[0].size()
            assert after <= max_size
            assert evicted == before - after
            if evicted:
                self.pristine = False

        @precondition(lambda self: self.trees[0].size() > 0)
        @rule(data=st.data())
        def evict_mem(self, data):
            before = self.trees[0].mem_size()
            max_bytes = data.draw(
                st.one_of(st.integers(before // 2, before + 2), st.integers(0, before)), label="max_bytes"
            )
            freed = self._all(lambda t: t.evict_mem(max_bytes))
            after = self.trees[0].mem_size()
            assert after <= max_bytes
            assert freed == before - after
            if freed:
                self.pristine = False

        @invariant()
        def observables_agree(self):
            tenants = self._all(lambda t: t.tenants())
            total = self._all(lambda t: t.size())
            self._all(lambda t: t.mem_size())  # each _check() below recounts it from the nodes
            sizes = self._all(lambda t: [t.tenant_size(x) for x in TENANTS])
            self._all(lambda t: t.node_count())
            assert total == sum(sizes)
            assert tenants == [x for x, n in zip(TENANTS, sizes) if n]
            for t in self.trees:
                t._check()
            want = [self.model.tenant_size(x) for x in TENANTS]
            if self.pristine:
                assert sizes == want
            else:
                assert all(a <= b for a, b in zip(sizes, want))

    return RadixMachine


STATEFUL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

STR_KEYS = st.text(alphabet=STR_ALPHABET, max_size=8)
TOKEN_KEYS = st.lists(st.sampled_from(TOKEN_ALPHABET), max_size=8)


@pytest.mark.parametrize("c_cls", [p for p in twin_params(None, StringTreeC)])
def test_stateful_string_tree(c_cls):
    """py leg: twin vs model; c leg: native vs twin vs model."""
    run_state_machine_as_test(_machine(StringTreePy, c_cls, STR_KEYS, str), settings=STATEFUL_SETTINGS)


@pytest.mark.parametrize("c_cls", [p for p in twin_params(None, TokenTreeC)])
def test_stateful_token_tree(c_cls):
    """py leg: twin vs model; c leg: native vs twin vs model. Keys mix lists, tuples and
    arrays so every acquisition path of the native tree is exercised."""
    keys = st.one_of(
        TOKEN_KEYS,
        TOKEN_KEYS.map(tuple),
        TOKEN_KEYS.map(lambda k: array("I", k)),
        TOKEN_KEYS.map(lambda k: array("q", k)),
    )
    run_state_machine_as_test(_machine(TokenTreePy, c_cls, keys, list), settings=STATEFUL_SETTINGS)


def test_evict_tenant_trims_only_that_tenant_oldest_first(mk):
    cls, k = mk
    t = cls()
    t.insert(k("aaaa"), "x")
    t.insert(k("bbbb"), "x")
    t.insert(k("aaaa"), "y")
    t.insert(k("cccc"), "x")
    assert t.tenant_size("x") == 12
    assert t.evict_tenant("x", 8) == 4                 # its oldest leaf, "aaaa", goes
    assert t.match_tenant(k("aaaa"), "x") == 0 and t.match_tenant(k("aaaa"), "y") == 4
    assert t.match_tenant(k("bbbb"), "x") == 4
    assert t.evict_tenant("x", 100) == 0 and t.evict_tenant("nobody", 0) == 0
    assert t.evict_tenant("x", 0) == 8 and t.tenants() == ["y"]
    with pytest.raises(ValueError):
        t.evict_tenant("y", -1)


def test_evict_tenant_twins_agree():
    rng = random.Random(11)
    kinds = [(c, lambda s: s) for c in (StringTreeC, StringTreePy) if c is not None]
    trees = [c() for c, _ in kinds]
    for step in range(400):
        key = "".join(rng.choice("abcd") for _ in range(rng.randint(1, 10)))
        who = rng.choice("pqr")
        for tr in trees:
            tr.insert(key, who)
        if step % 25 == 24:
            bound = rng.randint(0, 40)
            got = {tr.evict_tenant(who, bound) for tr in trees}
            assert len(got) == 1
            assert len({tuple(tr.tenant_size(x) for x in "pqr") for tr in trees}) == 1
            q = "".join(rng.choice("abcd") for _ in range(8))
            assert len({tuple(sorted(tr.match_all(q).items())) for tr in trees}) == 1
