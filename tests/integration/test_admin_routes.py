"""The engine and admin routes over real sockets: /health_generate, /engine_metrics,
/v1/models(/{id}), /flush_cache, /start_profile, /stop_profile, /get_loads,
/v1/classify, /v1/messages/count_tokens, in front of mock workers, one of them failing
(refusing the engine control calls, or stopped) for the partial answers."""
from __future__ import annotations

import http.client
import json

import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig

JSON = {"content-type": "application/json"}


def call(h, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=15)
    try:
        c.request(method, path, body=body, headers=headers or (JSON if body is not None else {}))
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def doc(h, method, path, body=None):
    st, headers, data = call(h, method, path, body)
    return st, json.loads(data)


@pytest.fixture(scope="module")
def two():
    """A gateway before a good worker and one that refuses engine control calls."""
    with GatewayHarness(workers=[MockConfig(worker_id="good", model="m-good"),
                                 MockConfig(worker_id="bad", model="m-bad", admin_status=500)]) as h:
        yield h


@pytest.fixture
def empty():
    with GatewayHarness(workers=[]) as h:
        yield h


@pytest.fixture
def with_dead():
    """One good worker and one whose process has stopped (health checks off: it stays listed)."""
    with GatewayHarness(workers=[MockConfig(worker_id="good"), MockConfig(worker_id="dead", model="m-dead")],
                        disable_health_check=True) as h:
        dead = h.workers[1]
        h.run(dead.stop())
        yield h, dead.url


# -- one worker, relayed


def test_health_generate_relays_one_workers_answer(two):
    asked = lambda: sum(w.stats.paths.get("/health_generate", 0) for w in two.workers)  # noqa: E731
    before = asked()
    st, headers, body = call(two, "GET", "/health_generate")
    assert st == 200 and headers["content-type"] == "text/plain" and body == b""
    st, headers, body = call(two, "HEAD", "/health_generate")
    assert st == 200 and body == b""
    assert asked() == before + 2  # each asked one worker (with GET: HEAD is not an engine route)
    two.workers[0].config.health_status = 503
    two.workers[1].config.health_status = 503
    try:
        assert {call(two, "GET", "/health_generate")[0] for _ in range(4)} == {503}
    finally:
        two.workers[0].config.health_status = two.workers[1].config.health_status = 200


def test_health_generate_without_workers_is_503(empty):
    st, d = doc(empty, "GET", "/health_generate")
    assert st == 503 and d["error"]["code"] == "no_workers"


# -- models


def test_models_are_built_from_the_registry(two):
    st, d = doc(two, "GET", "/v1/models")
    assert st == 200 and d["object"] == "list"
    assert sorted(m["id"] for m in d["data"]) == ["m-bad", "m-good"]
    for m in d["data"]:
        assert m["object"] == "model" and m["created"] == 0 and m["owned_by"] == "self_hosted"
    st, d = doc(two, "GET", "/v1/models/m-good")
    assert st == 200 and d["id"] == "m-good" and d["object"] == "model"
    st, d = doc(two, "GET", "/v1/models/nope")
    assert st == 404 and d["error"]["code"] == "model_not_found" and "'nope'" in d["error"]["message"]
    st, headers, body = call(two, "HEAD", "/v1/models/m-good")
    assert st == 200 and body == b"" and int(headers["content-length"]) > 0


def test_models_without_workers_is_503(empty):
    st, d = doc(empty, "GET", "/v1/models")
    assert st == 503 and d["error"]["code"] == "no_models_available"


# -- fan-outs


def test_flush_cache_partial_is_206(two):
    st, d = doc(two, "POST", "/flush_cache")
    good, bad = two.workers[0].url, two.workers[1].url
    assert st == 206 and d["status"] == "partial_success"
    assert d["workers_flushed"] == 1 and d["total_http_workers"] == 2 and d["total_workers"] == 2
    assert d["successful"] == [good]
    assert d["failed"] == [{"worker": bad, "error": f"flush_cache failed for worker {bad}/flush_cache: "
                                                   "HTTP 500 Internal Server Error"}]
    assert d["message"] == "Cache flush: 1 succeeded, 1 failed"
    assert two.workers[0].stats.paths["/flush_cache"] >= 1


def test_flush_cache_all_good_and_none(empty, two):
    two.workers[1].config.admin_status = 200
    try:
        st, d = doc(two, "POST", "/flush_cache")
    finally:
        two.workers[1].config.admin_status = 500
    assert st == 200 and d["status"] == "success" and d["workers_flushed"] == 2
    assert "failed" not in d and d["message"] == "Successfully flushed cache on all 2 workers"
    st, d = doc(empty, "POST", "/flush_cache")
    assert st == 200 and d["total_workers"] == 0 and d["message"] == "No workers available for cache flush"
    assert call(empty, "GET", "/flush_cache")[0] == 405


def test_profile_forwards_options_and_reports_each_worker(two):
    st, d = doc(two, "POST", "/start_profile", json.dumps({"num_steps": 3, "output_dir": "/tmp/p"}))
    assert st == 206 and d["message"] == "Profile start: 1 succeeded, 1 failed"
    assert d["successful"] == [two.workers[0].url] and d["failed"][0]["worker"] == two.workers[1].url
    assert two.workers[0].stats.last_body == {"num_steps": 3, "output_dir": "/tmp/p", "profile_by_stage": False}
    # url picks one worker; stop sends no body
    st, d = doc(two, "POST", "/stop_profile", json.dumps({"url": two.workers[0].url}))
    assert st == 200 and d == {"status": "success", "message": "Successfully stopped profiling on all 1 workers",
                               "workers_profiled": 1, "total_workers": 1}
    assert two.workers[0].stats.last_body is None
    st, d = doc(two, "POST", "/start_profile", json.dumps({"url": "http://nowhere:1"}))
    assert st == 404 and d["status"] == "error" and "http://nowhere:1" in d["message"]


@pytest.mark.parametrize("body, status", [
    (b"{nope", 400), (b"[1]", 422), (b'{"num_steps": "3"}', 422), (b'{"bogus": 1}', 422), (b'{"url": 5}', 422),
])
def test_profile_refuses_bad_bodies(two, body, status):
    st, headers, data = call(two, "POST", "/start_profile", body)
    assert st == status and headers["content-type"].startswith("text/plain") and data


def test_profile_without_workers_is_404(empty):
    st, d = doc(empty, "POST", "/start_profile")
    assert st == 404 and d["message"] == "No workers available for profiling"


def test_get_loads_reports_every_rank_and_a_dead_worker(with_dead):
    h, dead = with_dead
    st, d = doc(h, "GET", "/get_loads")
    good = h.workers[0].url
    assert st == 200 and d["version"].startswith("smg-") and d["dp_rank_count"] == 1
    assert [(e["worker"], e["worker_type"], e["dp_rank"]) for e in d["loads"]] == [(good, "regular", 0)]
    assert d["loads"][0]["max_total_num_tokens"] == 524288  # the worker's own report
    assert d["aggregate"]["total_reqs"] == 0
    assert d["total_workers"] == 2 and d["successful"] == 1 and d["failed"] == 1
    by = {w["worker"]: w for w in d["workers"]}
    assert by[good]["load"] == 0 and by[dead]["load"] == -1 and "error" in by[dead]
    st, headers, body = call(h, "HEAD", "/get_loads")
    assert st == 200 and body == b""


def test_get_loads_without_workers(empty):
    st, d = doc(empty, "GET", "/get_loads")
    assert st == 200 and d["loads"] == [] and d["dp_rank_count"] == 0 and "aggregate" not in d


def test_engine_metrics_merges_the_workers(with_dead):
    h, dead = with_dead
    st, headers, body = call(h, "GET", "/engine_metrics")
    text = body.decode()
    good = h.workers[0].url
    assert st == 200 and headers["content-type"].startswith("text/plain")
    assert "# TYPE sglang:num_running_reqs gauge" in text
    assert f'sglang:num_running_reqs{{model_name="mock-model",worker_addr="{good}"}} 0' in text
    assert dead not in text  # the stopped worker is left out


def test_engine_metrics_without_workers_is_500(empty):
    st, _, body = call(empty, "GET", "/engine_metrics")
    assert st == 500 and body == b"No available workers"


# -- proxied


def test_classify_and_count_tokens_are_proxied(two):
    st, d = doc(two, "POST", "/v1/classify", json.dumps({"model": "m-good", "input": ["a", "b"]}))
    assert st == 200 and [x["index"] for x in d["data"]] == [0, 1] and d["data"][0]["num_classes"] == 2
    assert two.workers[0].stats.last_body["input"] == ["a", "b"]
    body = json.dumps({"model": "m-good", "messages": [{"role": "user", "content": "hi"}]})
    st, d = doc(two, "POST", "/v1/messages/count_tokens", body)
    assert st == 200 and d["input_tokens"] > 0
    st, d = doc(two, "POST", "/v1/messages/count_tokens", json.dumps({"model": "m-good"}))
    assert st == 400 and d["type"] == "error"  # Anthropic's error format


def test_fanout_routes_over_http2(two):
    httpx = pytest.importorskip("httpx")
    with httpx.Client(http1=False, http2=True, base_url=two.url, timeout=10) as c:
        r = c.post("/flush_cache")
        assert r.http_version == "HTTP/2" and r.status_code == 206 and r.json()["workers_flushed"] == 1
        r = c.get("/health_generate")
        assert r.status_code == 200 and r.content == b""
        r = c.get("/get_loads")
        assert r.status_code == 200 and r.json()["successful"] == 2
        r = c.get("/workers")  # the gateway still answers on the same connection
        assert r.status_code == 200 and r.json()["total"] == 2
