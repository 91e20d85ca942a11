"""The metric families after scripted traffic: names, types, label names and the label
values SMG uses (router/worker error types, endpoint and path labels, ``le`` format,
per-attempt counting, breaker open and readmission, load polls)."""
import socket
import time
import urllib.request

from smg.observability.metrics import le_label
from smg.testing.mock_worker import MockConfig
from tests.cases.metrics_diff import families

from . import rawhttp

CT = b"content-type: application/json\r\n"


def body_for(model=None, stream=False, path=b"/v1/chat/completions") -> bytes:
    import json
    d = {"messages": [{"role": "user", "content": "hi"}]} if path != b"/v1/completions" else {"prompt": "hi"}
    if path == b"/v1/embeddings":
        d = {"input": "hi"}
    if path == b"/generate":
        d = {"text": "hi"}
    if model is not None:
        d["model"] = model
    if stream:
        d["stream"] = True
    return json.dumps(d).encode()


def post(h, body: bytes, path=b"/v1/chat/completions") -> int:
    return rawhttp.request(h.port, b"POST %s HTTP/1.1\r\nhost: x\r\n%scontent-length: %d\r\n\r\n%s"
                           % (path, CT, len(body), body), methods=["POST"])[0][0]


def text(h) -> str:
    with urllib.request.urlopen(h.metrics_url, timeout=5) as r:
        return r.read().decode()


def samples(t: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(t):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def total(m, name, **labels):
    """Sum of ``name`` over the series whose labels include ``labels``."""
    return sum(v for (n, ls), v in m.items() if n == name and labels.items() <= dict(ls).items())


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


RK = dict(router_type="http", backend_type="regular", connection_mode="http")

# Every family an HTTP-only gateway with default settings exports, with SMG's type and
# label names (PD, gRPC, MCP, storage, mesh, WASM, tokenizer and tokio families are
# left out: docs/compatibility.md "Metrics").
EXPECTED = {
    "smg_http_requests_total": ("counter", {"method", "path"}),
    "smg_http_request_duration_seconds": ("histogram", {"method", "path", "le"}),
    "smg_http_responses_total": ("counter", {"path", "status_code", "error_code"}),
    "smg_http_connections_active": ("gauge", set()),
    "smg_http_rate_limit_total": ("counter", {"result"}),
    "smg_router_requests_total": ("counter", {"router_type", "backend_type", "connection_mode", "model", "endpoint",
                                              "streaming"}),
    "smg_router_request_duration_seconds": ("histogram", {"router_type", "backend_type", "connection_mode", "model",
                                                          "endpoint", "le"}),
    "smg_router_request_errors_total": ("counter", {"router_type", "backend_type", "connection_mode", "model",
                                                    "endpoint", "error_type"}),
    "smg_router_upstream_responses_total": ("counter", {"router_type", "status_code", "error_code"}),
    "smg_worker_pool_size": ("gauge", {"worker_type", "connection_mode", "model"}),
    "smg_worker_requests_active": ("gauge", {"worker"}),
    "smg_worker_requests_total": ("counter", {"worker", "model"}),
    "smg_worker_health": ("gauge", {"worker"}),
    "smg_worker_http2": ("gauge", {"worker"}),
    "smg_worker_health_checks_total": ("counter", {"worker_type", "result"}),
    "smg_worker_selection_total": ("counter", {"worker_type", "connection_mode", "model", "policy"}),
    "smg_worker_errors_total": ("counter", {"worker_type", "connection_mode", "error_type"}),
    "smg_worker_cb_state": ("gauge", {"worker"}),
    "smg_worker_cb_transitions_total": ("counter", {"worker", "from", "to"}),
    "smg_worker_cb_outcomes_total": ("counter", {"worker", "outcome"}),
    "smg_worker_cb_consecutive_failures": ("gauge", {"worker"}),
    "smg_worker_cb_consecutive_successes": ("gauge", {"worker"}),
    "smg_worker_retries_total": ("counter", {"worker_type", "endpoint"}),
    "smg_worker_retries_exhausted_total": ("counter", {"worker_type", "endpoint"}),
    "smg_worker_retry_backoff_seconds": ("histogram", {"attempt", "le"}),
    "smg_engine_load_polls_total": ("counter", {"worker", "mode"}),
}


def test_families_types_and_label_values_after_a_traffic_mix(make_gateway):
    # a: healthy; b: answers 500; c: answers 400; d: resets; e: hangs; down: nothing listens
    down = f"http://127.0.0.1:{free_port()}"
    h = make_gateway(workers=[MockConfig(worker_id="a", model="m-a"), MockConfig(worker_id="b", model="m-b",
                                                                                 fail_status=500),
                              MockConfig(worker_id="c", model="m-c", fail_status=400),
                              MockConfig(worker_id="d", model="m-d", fail_mode="reset"),
                              MockConfig(worker_id="e", model="m-e", fail_mode="hang")],
                     disable_retries=True, request_timeout_secs=1, load_monitor_interval=0.2)
    a, b, c, d, e = (w.url for w in h.workers)
    got = [post(h, body_for("m-a")), post(h, body_for("m-a", stream=True)), post(h, body_for("m-b")),
           post(h, body_for("m-b", stream=True)), post(h, body_for("m-c")), post(h, body_for("m-d")),
           post(h, body_for("m-e")), post(h, body_for("nope")), post(h, b"{bad"),
           post(h, body_for("m-a", path=b"/v1/embeddings"), b"/v1/embeddings"),
           post(h, body_for(None, path=b"/generate"), b"/generate"),
           post(h, body_for("m-a"), b"/v1/nothing")]
    assert got[:5] == [200, 200, 500, 500, 400] and got[6] == 504 and got[7] == 404 and got[8] == 400
    assert got[5] >= 500 and got[9] == 200 and got[11] == 404
    rawhttp.request(h.port, b"GET /junk HTTP/1.1\r\nhost: x\r\n\r\n")
    h.on_loop(lambda: h.gw.add_worker(down))  # a worker nobody answers for
    end = time.monotonic() + 10
    t = text(h)
    while "smg_engine_load_polls_total{" not in t and time.monotonic() < end:
        time.sleep(0.1)
        t = text(h)
    fams = families(t, skip_zero=False)
    for name, (kind, labels) in EXPECTED.items():
        assert name in fams, name
        assert fams[name].type == kind, name
        if fams[name].label_names:
            assert fams[name].label_names == labels, name
    m = samples(t)
    # HTTP layer: paths outside the table are "other"
    assert val(m, "smg_http_requests_total", method="POST", path="other") == 1
    assert val(m, "smg_http_requests_total", method="GET", path="other") == 1
    les = {dict(k[1])["le"] for k in m if k[0] == "smg_http_request_duration_seconds_bucket"}
    assert {"0.001", "2.5", "5", "7200", "+Inf"} <= les and "5.0" not in les
    # router layer: what reached selection, by the request's model and stream flag
    chat = dict(RK, endpoint="chat")
    assert val(m, "smg_router_requests_total", model="m-a", streaming="false", **chat) == 1
    assert val(m, "smg_router_requests_total", model="m-a", streaming="true", **chat) == 1
    assert val(m, "smg_router_requests_total", model="m-b", streaming="true", **chat) == 1
    assert val(m, "smg_router_requests_total", model="other", streaming="false", **chat) == 1
    assert val(m, "smg_router_requests_total", model="m-a", streaming="false", endpoint="other", **RK) == 1
    assert val(m, "smg_router_requests_total", model="unknown", streaming="false", endpoint="generate", **RK) == 1
    assert val(m, "smg_router_request_errors_total", model="other", error_type="no_workers", **chat) == 1
    assert val(m, "smg_router_request_errors_total", model="m-b", error_type="backend_error", **chat) == 2
    assert val(m, "smg_router_request_errors_total", model="m-c", error_type="validation_error", **chat) == 1
    # a transport failure or a timeout is the worker's error, not the router's
    assert total(m, "smg_router_request_errors_total", model="m-d") == 0
    assert total(m, "smg_router_request_errors_total", model="m-e") == 0
    # durations only of successful answers
    assert total(m, "smg_router_request_duration_seconds_count", model="other") == 0
    assert total(m, "smg_router_request_duration_seconds_count", model="m-b") == 0
    assert total(m, "smg_router_request_duration_seconds_count", model="m-a") == 3  # chat x2, embeddings
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="500", error_code="") == 2
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="404",
               error_code="model_not_found") == 1
    assert total(m, "smg_router_upstream_responses_total", router_type="http", status_code="504") == 1
    # worker layer
    wk = dict(worker_type="regular", connection_mode="http")
    assert val(m, "smg_worker_errors_total", error_type="backend_error", **wk) == 3  # b twice, d
    assert val(m, "smg_worker_errors_total", error_type="timeout", **wk) == 1        # e
    assert val(m, "smg_worker_requests_total", worker=a, model="m-a") == 4  # chat x2, embeddings, generate
    assert val(m, "smg_worker_requests_total", worker=b, model="m-b") == 2
    assert val(m, "smg_worker_requests_total", worker=e, model="m-e") == 1
    assert val(m, "smg_worker_selection_total", model="unknown", policy="round_robin", **wk) == 1
    # retries off: a retryable failure (500, reset) exhausts at once; a 400 or a timeout does not
    assert val(m, "smg_worker_retries_exhausted_total", worker_type="regular", endpoint="chat") == 3
    assert val(m, "smg_worker_http2", worker=a) == 0
    assert val(m, "smg_worker_health", worker=down) == 0
    assert val(m, "smg_engine_load_polls_total", worker=a, mode="poll") >= 1
    # label values come from bounded sets only
    for (_, ls), _v in m.items():
        for k, v in ls:
            assert "nope" not in v and "junk" not in v and "nothing" not in v


def test_retried_attempts_count_per_attempt(make_gateway):
    # b answers 503: each request round-robined to b is retried on a
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b", fail_status=503)],
                     retry_initial_backoff_ms=1, cb_failure_threshold=100)
    a, b = (w.url for w in h.workers)
    assert [post(h, body_for("mock-model")) for _ in range(4)] == [200] * 4
    m = samples(text(h))
    tried = h.workers[1].stats.paths.get("/v1/chat/completions", 0)  # b's sends, each retried on a
    assert tried >= 1
    assert val(m, "smg_worker_requests_total", worker=a, model="mock-model") == 4
    assert val(m, "smg_worker_requests_total", worker=b, model="mock-model") == tried
    assert val(m, "smg_worker_retries_total", worker_type="regular", endpoint="chat") == tried
    assert val(m, "smg_worker_retry_backoff_seconds_count", attempt="1") == tried
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="503",
               error_code="") == tried
    assert val(m, "smg_worker_errors_total", worker_type="regular", connection_mode="http",
               error_type="backend_error") == tried
    assert val(m, "smg_worker_retries_exhausted_total", worker_type="regular", endpoint="chat") == 0
    assert val(m, "smg_router_requests_total", model="mock-model", endpoint="chat", streaming="false", **RK) == 4
    les = {dict(k[1])["le"] for k in m if k[0] == "smg_worker_retry_backoff_seconds_bucket"}
    assert {"0.01", "1", "60", "+Inf"} <= les


def test_breaker_opens_and_readmits(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_status=500)], disable_retries=True,
                     cb_failure_threshold=2, cb_success_threshold=1, cb_timeout_duration_secs=0.3)
    a = h.workers[0].url
    assert [post(h, body_for("mock-model")) for _ in range(2)] == [500, 500]
    m = samples(text(h))
    assert val(m, "smg_worker_cb_state", worker=a) == 1
    assert val(m, "smg_worker_cb_transitions_total", worker=a, **{"from": "closed", "to": "open"}) == 1
    assert val(m, "smg_worker_cb_consecutive_failures", worker=a) == 2
    h.workers[0].config.fail_status = None      # the worker recovers
    time.sleep(0.4)                             # past the breaker's timeout: half-open admits
    end = time.monotonic() + 10
    while post(h, body_for("mock-model")) != 200 and time.monotonic() < end:
        time.sleep(0.1)
    m = samples(text(h))
    assert val(m, "smg_worker_cb_transitions_total", worker=a, **{"from": "open", "to": "half_open"}) == 1
    assert val(m, "smg_worker_cb_transitions_total", worker=a, **{"from": "half_open", "to": "closed"}) == 1
    assert val(m, "smg_worker_cb_state", worker=a) == 0
    assert val(m, "smg_worker_cb_outcomes_total", worker=a, outcome="failure") == 2
    assert val(m, "smg_worker_cb_outcomes_total", worker=a, outcome="success") >= 1


def test_le_label_format():
    assert [le_label(x) for x in (5.0, 0.001, 2.5, 7200, 1e-05, 0.0005)] == ["5", "0.001", "2.5", "7200", "0.00001",
                                                                          "0.0005"]
