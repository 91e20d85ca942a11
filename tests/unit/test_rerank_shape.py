"""The rerank conversion (smg/server/rerank.py): the worker's request, and the
gateway's rerank object built from the worker's list of results."""
from __future__ import annotations

import orjson

from smg.server import rerank


def test_v1_request_keeps_query_and_documents_only():
    body = {"model": "m", "query": "q", "documents": ["a"], "top_k": 3, "return_documents": False, "x": 1}
    assert list(rerank.worker_request(body, True).items()) == [
        ("query", "q"), ("documents", ["a"]), ("model", "unknown"), ("return_documents", True), ("rid", None),
        ("user", None)]


def test_request_field_order_and_defaults():
    body = {"user": "u", "model": "m", "documents": ["a", "b"], "query": "q", "extra": 1}
    assert list(rerank.worker_request(body, False)) == ["query", "documents", "model", "return_documents", "rid",
                                                       "user"]
    assert rerank.worker_request(body, False)["return_documents"] is True
    out = rerank.worker_request(dict(body, top_k=2, return_documents=False, rid="r"), False)
    assert list(out) == ["query", "documents", "model", "top_k", "return_documents", "rid", "user"]
    assert out["top_k"] == 2 and out["return_documents"] is False and out["rid"] == "r"


def test_wrap_sorts_cuts_and_drops_documents():
    raw = orjson.dumps([{"index": 0, "score": 0.1, "document": "a", "extra": 5},
                        {"index": 1, "score": 0.9, "document": "b", "meta_info": {"id": "x"}},
                        {"index": 2, "score": 0.5}])
    doc = orjson.loads(rerank.wrap(raw, "m", "r1", 2, False))
    assert list(doc) == ["results", "model", "usage", "object", "id", "created"]
    assert doc["model"] == "m" and doc["id"] == "r1" and doc["object"] == "rerank" and doc["usage"] is None
    assert type(doc["created"]) is int and doc["created"] > 0
    assert doc["results"] == [{"score": 0.9, "index": 1, "meta_info": {"id": "x"}}, {"score": 0.5, "index": 2}]
    full = orjson.loads(rerank.wrap(raw, "m", None, None, True))["results"]
    assert [r["index"] for r in full] == [1, 2, 0] and full[2] == {"score": 0.1, "document": "a", "index": 0}


def test_scores_are_written_as_32_bit_floats():
    raw = orjson.dumps([{"index": 0, "score": -0.0025046092582565356}, {"index": 1, "score": 1e300}])
    scores = [r["score"] for r in orjson.loads(rerank.wrap(raw, "m", None, None, True))["results"]]
    assert scores == [1e300, -0.0025046093]


def test_answers_that_are_not_scored_lists_are_left_alone():
    for raw in (b'{"results": []}', b"not json", b"[1, 2]", b'[{"index": 0, "score": "high"}]'):
        assert rerank.wrap(raw, "m", None, None, True) is None
    assert orjson.loads(rerank.wrap(b"[]", "m", None, None, True))["results"] == []
