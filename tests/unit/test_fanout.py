"""The fan-out answers (smg/server/fanout.py), built from workers' replies without sockets."""
from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smg.server import fanout as F
from smg.workers.worker import PENDING, READY, Worker


def worker(url, wtype="regular", status=READY, dp_rank=None):
    w = Worker(url, worker_type=wtype, dp_rank=dp_rank)
    w.status = status
    return w


def ok(w, body=b"", status=200):
    return F.WorkerReply(w, w.base_url, status, body, None)


def bad(w, error="boom"):
    return F.WorkerReply(w, w.base_url, 0, b"", error)


def test_servers_asks_each_address_once_and_skips_pending():
    a0, a1 = worker("http://a:1", dp_rank=0), worker("http://a:1", dp_rank=1)
    b = worker("http://b:1", status=PENDING)
    c = worker("http://c:1", status="draining")
    assert F.servers([a0, a1, b, c]) == [a0, c]


def test_flush_answer_shapes():
    a, b = worker("http://a:1"), worker("http://b:1")
    assert F.flush_answer([], 0) == (200, {
        "status": "success", "message": "No workers available for cache flush", "workers_flushed": 0,
        "total_http_workers": 0, "total_grpc_workers": 0, "total_zmq_workers_skipped": 0, "total_workers": 0})
    st, d = F.flush_answer([ok(a), ok(b)], 2)
    assert st == 200 and d["workers_flushed"] == 2 and "successful" not in d
    st, d = F.flush_answer([ok(a), bad(b, "x")], 3)
    assert st == 206 and d["status"] == "partial_success" and d["total_workers"] == 3
    assert d["successful"] == ["http://a:1"] and d["failed"] == [{"worker": "http://b:1", "error": "x"}]


def test_profile_answer_shapes():
    a, b = worker("http://a:1"), worker("http://b:1")
    assert F.profile_answer("start", [], 0)[0] == 404
    st, d = F.profile_answer("start", [ok(a)], 1)
    assert (st, d["message"]) == (200, "Successfully started profiling on all 1 workers")
    st, d = F.profile_answer("stop", [bad(a), bad(b)], 2)
    assert st == 206 and d["message"] == "Profile stop: 0 succeeded, 2 failed" and d["successful"] == []


@pytest.mark.parametrize("body, url, options", [
    ({}, None, {"profile_by_stage": False}),
    ({"url": "http://a:1", "num_steps": 2}, "http://a:1", {"num_steps": 2, "profile_by_stage": False}),
    ({"options": {"activities": ["CPU"], "with_stack": True}}, None,
     {"activities": ["CPU"], "with_stack": True, "profile_by_stage": False}),
    ({"profile_by_stage": True, "output_dir": None}, None, {"profile_by_stage": True}),
])
def test_profile_request_accepts(body, url, options):
    assert F.profile_request(body) == (url, options)


@pytest.mark.parametrize("body", [[1], {"url": 1}, {"num_steps": True}, {"activities": "CPU"}, {"x": 1},
                                  {"options": []}, {"with_stack": "yes"}])
def test_profile_request_refuses(body):
    with pytest.raises(ValueError):
        F.profile_request(body)


def test_loads_answer_sums_ranks_and_marks_failures():
    a, b, p = worker("http://a:1"), worker("http://b:1"), worker("http://p:1", "prefill")
    two_ranks = orjson.dumps({"loads": [
        {"dp_rank": 0, "num_running_reqs": 2, "num_used_tokens": 100, "token_usage": 0.5, "num_total_reqs": 2},
        {"dp_rank": 1, "num_running_reqs": 1, "num_used_tokens": 50, "token_usage": 0.25, "num_total_reqs": 1}]})
    d = F.loads_answer([ok(a, two_ranks), bad(b), ok(p, b"not json")], 0.0)
    assert d["timestamp"].startswith("1970-01-01T00:00:00") and d["dp_rank_count"] == 2
    assert [(e["worker"], e["dp_rank"], e["num_used_tokens"]) for e in d["loads"]] == [
        ("http://a:1", 0, 100), ("http://a:1", 1, 50)]
    assert all(set(F.RANK_FIELDS) <= set(e) for e in d["loads"])  # absent fields are 0
    assert d["aggregate"]["total_running_reqs"] == 3 and d["aggregate"]["avg_token_usage"] == 0.375
    assert [(w["worker"], w["worker_type"], w["load"]) for w in d["workers"]] == [
        ("http://a:1", "regular", 150), ("http://b:1", "regular", -1), ("http://p:1", "prefill", -1)]
    assert d["successful"] == 1 and d["failed"] == 2 and d["total_workers"] == 3


def test_merge_metrics_labels_and_merges_families():
    t1 = ("# HELP sglang:token_usage usage\n# TYPE sglang:token_usage gauge\n"
          'sglang:token_usage{model_name="m"} 0.5\n'
          "# TYPE req_total counter\nreq_total 3\n")
    t2 = "# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name=\"n\"} 1\n"
    text = F.merge_metrics([("http://a:1", t1), ("http://b:1", t2), ("http://c:1", "{{{ not metrics")])
    assert 'sglang:token_usage{model_name="m",worker_addr="http://a:1"} 0.5' in text
    assert 'sglang:token_usage{model_name="n",worker_addr="http://b:1"} 1' in text
    assert text.count("# TYPE sglang:token_usage gauge") == 1 and "# TYPE req_total counter" in text
    assert "http://c:1" not in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}  # the result parses again
    assert len(fams["sglang:token_usage"].samples) == 2 and fams["req"].samples[0].value == 3
    assert F.merge_metrics([]) == ""
