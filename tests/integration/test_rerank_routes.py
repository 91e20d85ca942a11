"""The rerank routes, the probes and the info routes over real sockets: what the
worker gets, what the client gets, and which answers name the worker."""
from __future__ import annotations

import httpx
import pytest

from smg.testing.echo_worker import EchoWorker
from smg.testing.harness import GatewayHarness, LoopThread
from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

ROUTED = "x-smg-routed-worker-id"


@pytest.fixture(scope="module")
def rig():
    lt = LoopThread()
    try:
        worker = lt.run(EchoWorker(MockConfig(model="mock-model")).start("127.0.0.1", 0))
        url = f"http://127.0.0.1:{worker.port}"
        with GatewayHarness(workers=[], extra_worker_urls=(url,)) as h:
            ready = wait_for(lambda: httpx.get(h.url + "/readiness", timeout=5).status_code == 200, timeout=10)
            assert ready, "the gateway never became ready"
            yield h, url
        lt.run(worker.stop())
    finally:
        lt.stop()


def _received(url: str) -> list:
    recs = httpx.get(url + "/_received", timeout=5).json()["records"]
    httpx.delete(url + "/_received", timeout=5)
    return [r for r in recs if "rerank" in r["target"] or "chat" in r["target"]]


def test_v1_rerank_is_answered_as_the_gateways_object(rig):
    h, url = rig
    _received(url)
    r = httpx.post(h.url + "/v1/rerank", json={"model": "whatever", "query": "q", "documents": ["a", "b"],
                                               "top_k": 1}, timeout=10)
    assert r.status_code == 200 and ROUTED not in r.headers
    doc = r.json()
    assert doc["object"] == "rerank" and doc["model"] == "unknown" and doc["id"] is None
    assert len(doc["results"]) == 2 and {x["document"] for x in doc["results"]} == {"a", "b"}
    assert int(r.headers["content-length"]) == len(r.content)
    [rec] = _received(url)
    assert rec["target"] == "/v1/rerank"
    assert httpx.Response(200, content=rec["body"].encode()).json() == {
        "query": "q", "documents": ["a", "b"], "model": "unknown", "return_documents": True, "rid": None,
        "user": None}


def test_rerank_goes_to_the_workers_v1_route_and_is_cut_to_top_k(rig):
    h, url = rig
    _received(url)
    r = httpx.post(h.url + "/rerank", json={"model": "mock-model", "query": "q", "documents": ["a", "b", "c"],
                                            "top_k": 1, "rid": "r-7", "junk": 1}, timeout=10)
    assert r.status_code == 200 and ROUTED not in r.headers
    doc = r.json()
    assert doc["model"] == "mock-model" and doc["id"] == "r-7" and len(doc["results"]) == 1
    [rec] = _received(url)
    assert rec["target"] == "/v1/rerank" and '"junk"' not in rec["body"] and '"top_k":1' in rec["body"]


def test_rerank_validation_still_refuses(rig):
    h, url = rig
    _received(url)
    r = httpx.post(h.url + "/rerank", json={"model": "mock-model", "query": "", "documents": ["a"]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"
    assert _received(url) == []


@pytest.mark.parametrize("path", ["/health", "/liveness"])
def test_probes_answer_plain_ok(rig, path):
    h, _ = rig
    r = httpx.get(h.url + path, timeout=5)
    assert r.status_code == 200 and r.text == "OK" and r.headers["content-type"].startswith("text/plain")
    r = httpx.head(h.url + path, timeout=5)
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "2"


def test_only_routed_answers_name_the_worker(rig):
    h, url = rig
    for path in ("/get_model_info", "/get_server_info"):
        r = httpx.get(h.url + path, timeout=5)
        assert r.status_code == 200 and ROUTED not in r.headers, path
    r = httpx.post(h.url + "/v1/chat/completions",
                   json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 200 and r.headers[ROUTED] == url
