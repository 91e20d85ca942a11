"""cache_aware's ttft mode: the cost model (smg/routing/ttft_cost.py) and the choice it makes."""
from types import SimpleNamespace

from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.radix import StringTreeC, StringTreePy
from smg.routing.ttft_cost import DEFAULT_CAPACITY, cost, report_terms

import pytest


def test_cost_adds_prefill_and_queue_relative_to_capacity():
    assert cost(100, 0, 8, 0, 1000) == 100                      # idle: only the prefill
    assert cost(100, 4, 8, 0, 1000) == 100 + 500                # half busy, no wait for a slot
    assert cost(0, 1, 1, 0, 1000) == 2000                       # single slot taken: busy + one to wait for
    assert cost(0, 1, 256, 0, 1000) == pytest.approx(1000 / 256)
    assert cost(10, 0, 8, 300, 1000) == 310                     # reported queued prefill counts
    # a long hit on a busy single-slot engine loses to an idle engine holding nothing
    assert cost(50, 1, 1, 0, 2048) > cost(1500, 0, 1, 0, 2048)
    # but wins against an equally busy one
    assert cost(50, 1, 1, 0, 2048) < cost(1500, 1, 1, 0, 2048)


def test_report_terms():
    assert report_terms(None) == (DEFAULT_CAPACITY, 0, 0)
    assert report_terms({"max_running_requests": 2, "num_total_reqs": 3,
                         "num_waiting_uncached_tokens": 40}) == (2, 3, 40)
    assert report_terms({"num_running_reqs": 1, "num_waiting_reqs": 2, "max_running_requests": 0}) == (
        DEFAULT_CAPACITY, 3, 0)


class W:
    def __init__(self, wid, cap=None, inflight=0):
        self.id = wid
        self.url = "http://" + wid
        self.inflight = inflight
        self.processed = 0
        self.engine = None if cap is None else {"max_running_requests": cap, "num_total_reqs": 0}


class Req:
    def __init__(self, text):
        self.text = text

    def routing_text(self):
        return self.text

    def routing_tokens(self):
        return None


def _policy(tree_cls, **kw):
    cfg = SimpleNamespace(cache_aware_mode="ttft", cache_aware_request_cost_tokens=2048, **kw)
    return CacheAwarePolicy(cfg, tree_cls=tree_cls)


@pytest.mark.parametrize("tree_cls", [c for c in (StringTreeC, StringTreePy) if c is not None])
def test_ttft_mode_weighs_the_hit_against_the_queue(tree_cls):
    p = _policy(tree_cls)
    a, b = W("a", cap=1), W("b", cap=1)
    shared = "S" * 6000                      # 1500 tokens of shared prefix
    assert p.select([a, b], Req(shared + "one")) is a          # tie → the first
    # a holds the prefix and is idle: the hit wins
    assert p.select([a, b], Req(shared + "two")) is a
    # a is busy (one running on its single slot): prefill of 1500 tokens on b is cheaper
    a.inflight = 1
    assert p.select([a, b], Req(shared + "three")) is b
    # both busy: the hit wins again
    b.inflight = 1
    assert p.select([a, b], Req(shared + "four")) in (a, b)
    # on roomy engines (256 slots) one running request is no reason to give up the hit
    p2 = _policy(tree_cls)
    c, d = W("c", cap=256), W("d", cap=256)
    p2.select([c, d], Req(shared + "x"))
    c.inflight = 3
    assert p2.select([c, d], Req(shared + "y")) is c


def test_ttft_mode_reads_a_new_report_and_forgets_removed_workers():
    p = _policy(StringTreePy)
    a, b = W("a", cap=1), W("b", cap=1)
    p.select([a, b], Req("S" * 4000 + "1"))
    a.inflight = 1
    assert p.select([a, b], Req("S" * 4000 + "2")) is b
    a.engine = {"max_running_requests": 512}                   # a fresh report: a is roomy after all
    b.inflight = 1                                             # and b is busy now
    assert p.select([a, b], Req("S" * 4000 + "3")) is a
    p.on_worker_removed(a)
    assert "a" not in p._reports and p.tree.match_all("S" * 10) == {"b": 10}


def test_threshold_mode_is_the_default():
    p = CacheAwarePolicy(SimpleNamespace())
    assert p.mode == "threshold" and "select" not in vars(p)
