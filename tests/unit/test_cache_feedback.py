"""cache_aware's closed loop (smg/routing/cache_feedback.py): reading cached_tokens, the
tree corrections, the end hook, and the policy wiring."""
from types import SimpleNamespace

import pytest

from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.cache_feedback import AnswerHook, Feedback, cached_tokens
from smg.routing.radix import StringTreeC, StringTreePy

TREES = [c for c in (StringTreeC, StringTreePy) if c is not None]


def test_cached_tokens_from_bodies_and_events():
    body = (b'{"choices":[],"usage":{"prompt_tokens":900,"completion_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens": 768}}}')
    assert cached_tokens(body) == 768
    assert cached_tokens(b'{"usage":{"prompt_tokens":9}}') is None
    assert cached_tokens(b'{"cached_tokens":5}') is None          # not inside a usage object
    assert cached_tokens(b'{"usage":{"prompt_tokens_details":{"cached_tokens":null}}}') is None
    assert cached_tokens(b'') is None


@pytest.mark.parametrize("tree_cls", TREES)
def test_a_miss_trims_the_workers_oldest_entries_to_a_learned_capacity(tree_cls):
    t = tree_cls()
    fb = Feedback()
    for p in ("old-" * 100, "mid-" * 100, "new-" * 100):       # 400 chars each, oldest first
        t.insert(p, "w")
    t.insert("old-" * 100, "other")
    assert t.tenant_size("w") == 1200
    # the engine found none of "mid" (predicted 400 chars, i.e. 100 tokens at 4 a token)
    assert fb.correct(t, "w", 400, 0, 4) == "evicted"
    assert fb.caps["w"] == 800
    assert t.match_tenant("old-" * 100, "w") == 0                # the oldest went
    assert t.match_tenant("new-" * 100, "w") == 400
    assert t.match_tenant("old-" * 100, "other") == 400          # other workers are untouched
    # later inserts are held near the learned capacity
    for i in range(4):
        t.insert(f"x{i}-" * 100, "w")
        fb.enforce(t, "w")
        assert t.tenant_size("w") <= 800 * 1.25 + 400
    # a later, larger capacity estimate never raises it
    fb.correct(t, "w", 400, 0, 4)
    assert fb.caps["w"] <= 800


@pytest.mark.parametrize("tree_cls", TREES)
def test_small_gaps_change_nothing_and_unexpected_hits_grow_the_capacity(tree_cls):
    t = tree_cls()
    fb = Feedback()
    t.insert("a" * 800, "w")
    assert fb.correct(t, "w", 800, 760, 4) is None              # a block's rounding
    assert fb.correct(t, "w", 100, 80, 4) is None               # short of the gap
    assert t.tenant_size("w") == 800 and not fb.caps
    assert fb.correct(t, "w", 0, 800, 4) == "learned"
    fb.caps["w"] = 400
    fb.correct(t, "w", 0, 800, 4)
    assert fb.caps["w"] == 500
    assert fb.stats.learned == 2 and fb.stats.evicted == 0


class Scanner:
    def __init__(self, data):
        self.last_data = data


def _ctx(worker, scanner=None, parts=None):
    return SimpleNamespace(worker=worker, scanner=scanner, body_parts=parts)


def test_answer_hook_reads_streams_and_bodies_and_ignores_other_attempts():
    t = StringTreePy()
    t.insert("s" * 2000, "w1")
    t.insert("q" * 400, "w1")
    fb = Feedback()
    w1, w2 = SimpleNamespace(id="w1"), SimpleNamespace(id="w2")
    ev = b'{"choices":[],"usage":{"prompt_tokens":500,"prompt_tokens_details":{"cached_tokens":0}}}'
    AnswerHook(fb, t, w1, 2000, 4)(_ctx(w2, Scanner(ev)))        # a retry answered: not ours
    assert fb.stats.answers == 0
    AnswerHook(fb, t, w1, 2000, 4)(_ctx(w1, Scanner(b'{"choices":[]}')))   # no usage
    assert fb.stats.answers == 0
    AnswerHook(fb, t, w1, 2000, 4)(_ctx(w1, None, [ev[:30], ev[30:]]))
    st = fb.stats
    assert (st.answers, st.prompt_tokens, st.predicted_tokens, st.actual_tokens, st.evicted) == (1, 500, 500, 0, 1)
    assert t.match_tenant("s" * 2000, "w1") == 0                 # the older entry was trimmed
    AnswerHook(fb, t, w1, 0, 4)(_ctx(w1, None, None))           # nothing kept: nothing read
    assert fb.stats.answers == 1


class W:
    def __init__(self, wid):
        self.id = wid
        self.inflight = 0
        self.processed = 0
        self.engine = None


class Req:
    def __init__(self, text):
        self.text = text
        self.hooks = []
        self.worker = None
        self.scanner = None
        self.body_parts = None

    def routing_text(self):
        return self.text

    def routing_tokens(self):
        return None

    def add_end_hook(self, fn):
        self.hooks.append(fn)


@pytest.mark.parametrize("mode", ["threshold", "ttft"])
def test_policy_with_feedback_routes_away_from_an_evicted_prefix(mode):
    cfg = SimpleNamespace(cache_feedback=True, cache_aware_mode=mode, cache_threshold=0.3)
    p = CacheAwarePolicy(cfg, tree_cls=StringTreePy)
    a, b = W("a"), W("b")
    shared = "S" * 4000
    r = Req(shared + "1")
    assert p.select([a, b], r) is a and len(r.hooks) == 1
    b.processed = 0
    a.processed = 1
    r2 = Req("other prompt " * 50)
    p.select([a, b], r2)                      # goes to b (a's match is nil, b is less used)
    r3 = Req(shared + "2")
    assert p.select([a, b], r3) is a          # the tree predicts a hit on a
    r3.worker = a
    r3.body_parts = [b'{"usage":{"prompt_tokens":1000,"prompt_tokens_details":{"cached_tokens":0}}}']
    r3.hooks[0](r3)                           # but a had evicted it
    assert p.feedback.stats.evicted == 1
    assert p.tree.match_tenant(shared, "a") < 4000
    forget = Req("x")
    p.on_worker_removed(a)
    assert "a" not in p.feedback.caps and forget.hooks == []


def test_feedback_off_adds_no_hook():
    p = CacheAwarePolicy(SimpleNamespace(), tree_cls=StringTreePy)
    r = Req("S" * 100)
    p.select([W("a")], r)
    assert p.feedback is None and r.hooks == []
