"""Metrics scraped after real traffic, TTFT/TPOT from known token delays, traces, logs."""
import io
import json
import re
import socket
import threading
import time
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smg.observability.logs import AccessLog
from smg.streaming.sse import DEFAULT_MAX_EVENT_SIZE
from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def scrape(h) -> dict:
    """{(sample name, frozenset(labels.items())): value}."""
    with urllib.request.urlopen(h.metrics_url, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def post(h, body, path=b"/v1/chat/completions"):
    return rawhttp.request(h.port, b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           b"content-length: %d\r\n\r\n%s" % (path, len(body), body),
                           methods=["POST"])[0]


def test_http_and_router_counters(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b", fail_mode="reset")],
                     disable_retries=True)
    statuses = [post(h, CHAT)[0] for _ in range(4)] + [post(h, STREAM)[0], post(h, b"{bad")[0]]
    statuses.append(post(h, CHAT, b"/v1/nothing")[0])
    for i in range(5):  # random paths must not create labels
        rawhttp.request(h.port, b"GET /junk/%d HTTP/1.1\r\nhost: x\r\n\r\n" % i)
    assert sorted(statuses) == [200, 200, 200, 400, 404, 502, 502]
    m = scrape(h)
    assert val(m, "smg_http_requests_total", method="POST", path="/v1/chat/completions") == 6
    assert val(m, "smg_http_requests_total", method="POST", path="other") == 1
    assert val(m, "smg_http_requests_total", method="GET", path="other") == 5
    assert val(m, "smg_http_responses_total", path="/v1/chat/completions", status_code="200", error_code="") == 3
    # the reset worker's two answers (their error_code is the gateway's code of that error)
    assert sum(v for (n, ls), v in m.items() if n == "smg_http_responses_total"
               and dict(ls).get("status_code") == "502" and dict(ls)["path"] == "/v1/chat/completions") == 2
    assert val(m, "smg_http_responses_total", path="/v1/chat/completions", status_code="400",
               error_code="invalid_json") == 1
    assert val(m, "smg_http_request_duration_seconds_count", method="POST", path="/v1/chat/completions") == 6
    rk = dict(router_type="http", backend_type="regular", connection_mode="http", model="mock-model",
              endpoint="chat")
    assert val(m, "smg_router_requests_total", streaming="false", **rk) == 4
    assert val(m, "smg_router_requests_total", streaming="true", **rk) == 1
    # a transport failure is the worker's error, not a router error (as in SMG)
    assert not any(n == "smg_router_request_errors_total" and v for (n, _), v in m.items())
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="200", error_code="") == 3
    assert val(m, "smg_worker_selection_total", worker_type="regular", connection_mode="http", model="mock-model",
               policy="round_robin") == 5
    assert val(m, "smg_worker_errors_total", worker_type="regular", connection_mode="http",
               error_type="backend_error") == 2
    assert val(m, "smg_worker_pool_size", worker_type="regular", connection_mode="http", model="mock-model") == 2
    assert val(m, "smg_worker_health", worker=h.workers[0].url) == 1
    assert val(m, "smg_worker_requests_active", worker=h.workers[0].url) == 0
    assert val(m, "smg_http_connections_active") >= 0
    # usage from the 2 non-streamed answers of the healthy worker (round robin a,b,a,b; the
    # stream asked for no usage): 8 completion tokens each
    tl = dict(router_type="http", backend_type="regular", model="mock-model", endpoint="chat")
    assert val(m, "smg_router_tokens_total", token_type="output", **tl) == 8 * 2
    assert val(m, "smg_router_tokens_total", token_type="input", **tl) > 0


def test_ttft_and_tpot_buckets(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", ttft=0.3, token_delay=0.02, num_chunks=6)])
    c = openai.OpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0, timeout=10)
    for _ in range(2):
        list(c.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "hi"}],
                                       stream=True, stream_options={"include_usage": True}))
    m = scrape(h)
    tl = dict(router_type="http", backend_type="regular", model="mock-model", endpoint="chat")
    # ttft ~0.3 s: above the 0.25 bucket, inside 0.5
    assert val(m, "smg_router_ttft_seconds_bucket", le="0.25", **tl) == 0
    assert val(m, "smg_router_ttft_seconds_bucket", le="0.5", **tl) == 2
    # tpot ~0.02 s per token: above 0.01, inside 0.05
    assert val(m, "smg_router_tpot_seconds_bucket", le="0.01", **tl) == 0
    assert val(m, "smg_router_tpot_seconds_bucket", le="0.05", **tl) == 2
    assert val(m, "smg_router_tokens_total", token_type="output", **tl) == 12


def test_metrics_can_be_disabled(make_gateway):
    h = make_gateway(disable_metrics=True)
    assert h.gw.metrics_server is None and h.gw.observer is None
    assert post(h, CHAT)[0] == 200


def test_trace_context_reaches_worker():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from smg.observability.tracing import Tracing

    exporter = InMemorySpanExporter()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    with GatewayHarness(tracing=Tracing(exporter=exporter)) as h:
        raw = b"traceparent: 00-%s-%s-01\r\n" % (trace_id.encode(), parent.encode())
        st, headers, _ = rawhttp.request(h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n%s"
                                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (raw, len(CHAT), CHAT), methods=["POST"])[0]
        assert st == 200
        worker = next(w for w in h.workers if w.config.worker_id == headers["x-mock-worker"])
        tp = worker.stats.last_headers["traceparent"].split("-")
    assert tp[1] == trace_id          # same trace
    assert tp[2] != parent            # a new span: the gateway's
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    span = spans[0]
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == parent
    assert format(span.context.span_id, "016x") == tp[2]
    assert span.attributes["smg.worker"] == worker.url
    assert span.attributes["smg.policy"] == "round_robin"
    assert span.attributes["http.response.status_code"] == 200


def test_json_access_log_lines_carry_request_id():
    buf = io.BytesIO()
    with GatewayHarness(access_log=AccessLog(buf, json_lines=True)) as h:
        post(h, CHAT)
        rawhttp.request(h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: abc-1\r\n"
                        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(STREAM), STREAM), methods=["POST"])
        post(h, b"{bad")
        h.on_loop(h.gw.access_log.flush)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 3
    assert all(line["request_id"] and line["path"] == "/v1/chat/completions" for line in lines)
    ok, streamed, bad = lines
    assert ok["status"] == 200 and ok["worker"].startswith("http://127.0.0.1:") and ok["policy"] == "round_robin"
    assert ok["request_id"].startswith("chatcmpl-") and ok["bytes"] > 0
    assert isinstance(ok["duration_ms"], float) and "ttft_ms" not in ok   # no first token: not streamed
    assert streamed["request_id"] == "abc-1" and isinstance(streamed["ttft_ms"], float)
    assert bad["status"] == 400 and bad["worker"] == ""


def test_timing_and_worker_headers(make_gateway):
    h = make_gateway(expose_overhead_header=True, expose_worker_header=True)
    st, headers, _ = post(h, CHAT)
    assert st == 200
    assert re.fullmatch(r"\d+\.\d{3}", headers["x-smg-overhead-ms"])
    assert headers["x-smg-worker"] in {w.url for w in h.workers}
    plain = make_gateway()
    _, headers, _ = post(plain, CHAT)
    assert "x-smg-overhead-ms" not in headers and "x-smg-worker" not in headers


def test_retry_and_breaker_metrics(make_gateway):
    # b answers 503 to everything: each request to b is retried on a; b's breaker opens
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b", fail_status=503)],
                     cb_failure_threshold=2, retry_initial_backoff_ms=1, cb_timeout_duration_secs=60)
    assert [post(h, CHAT)[0] for _ in range(6)] == [200] * 6
    m = scrape(h)
    a, b = (w.url for w in h.workers)
    assert val(m, "smg_worker_retries_total", worker_type="regular", endpoint="chat") == 2
    # per attempt: b's two failed sends and a's six answers; b's 503s are worker errors
    assert val(m, "smg_worker_requests_total", worker=b, model="mock-model") == 2
    assert val(m, "smg_worker_requests_total", worker=a, model="mock-model") == 6
    assert val(m, "smg_worker_errors_total", worker_type="regular", connection_mode="http",
               error_type="backend_error") == 2
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="503", error_code="") == 2
    assert val(m, "smg_router_upstream_responses_total", router_type="http", status_code="200", error_code="") == 6
    assert val(m, "smg_worker_retries_exhausted_total", worker_type="regular", endpoint="chat") == 0
    assert val(m, "smg_worker_cb_outcomes_total", worker=b, outcome="failure") == 2
    assert val(m, "smg_worker_cb_outcomes_total", worker=a, outcome="success") == 6
    assert val(m, "smg_worker_cb_transitions_total", worker=b, **{"from": "closed", "to": "open"}) == 1
    assert val(m, "smg_worker_cb_state", worker=b) == 1
    assert val(m, "smg_worker_cb_state", worker=a) == 0
    assert val(m, "smg_worker_retry_backoff_seconds_count", attempt="1") == 2
    assert h.workers[1].stats.paths.get("/v1/chat/completions", 0) == 2  # not counting registration/probes


def test_engine_gauges_from_load_polls(make_gateway):
    # the mock worker serves /v1/loads; the load monitor re-exports it as smg_engine_* gauges
    h = make_gateway(workers=[MockConfig(worker_id="a")], load_monitor_interval=0.1)
    url = h.workers[0].url
    end = time.monotonic() + 10
    while time.monotonic() < end:
        m = scrape(h)
        # the registration's first load fills the gauges before the monitor's first poll
        if any(k[0] == "smg_engine_token_usage" for k in m) and \
                val(m, "smg_engine_load_polls_total", worker=url, mode="poll") >= 1:
            break
        time.sleep(0.1)
    engine = {k: v for k, v in m.items() if k[0].startswith("smg_engine_") and "load_polls" not in k[0]}
    assert val(m, "smg_engine_load_polls_total", worker=url, mode="poll") >= 1
    assert engine, "no engine gauges after load polls"
    assert all(dict(k[1])["worker"] == url and dict(k[1])["model"] == "mock-model" for k in engine)
    report = h.on_loop(lambda: h.gw.registry.all()[0].engine)
    assert val(m, "smg_engine_token_usage", worker=url, model="mock-model",
               dp_rank=str((report.get("loads") or [{}])[0].get("dp_rank", 0))) == pytest.approx(
        (report.get("loads") or [report])[0]["token_usage"])


def test_metrics_listener_answers_other_paths_cleanly(gateway):
    port = gateway.gw.metrics_port
    (st, _, body), = rawhttp.request(port, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
    assert st == 404 and json.loads(body)["error"]["code"] == "unknown_url"
    (st, headers, _), = rawhttp.request(port, b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
                                        methods=["POST"])
    assert st == 405 and headers["allow"] == "GET"
    (st, _, body), = rawhttp.request(port, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    assert st == 200 and b"smg_http_connections_active" in body


def test_text_access_log_times_streams_with_metrics_off():
    buf = io.BytesIO()
    with GatewayHarness(access_log=AccessLog(buf, json_lines=False), disable_metrics=True) as h:
        assert h.gw.metrics is None
        rawhttp.request(h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: s-1\r\n"
                        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(STREAM), STREAM), methods=["POST"])
        post(h, CHAT)
        h.on_loop(h.gw.access_log.flush)
    streamed, plain = buf.getvalue().splitlines()
    m = re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO smg\.access: request_id=s-1 method=POST "
                     rb"path=/v1/chat/completions status=200 worker=http://127\.0\.0\.1:\d+ policy=round_robin "
                     rb"model=mock-model duration_ms=(\d+\.\d{3}) ttft_ms=(\d+\.\d{3}) bytes=(\d+)", streamed)
    assert m, streamed
    assert float(m.group(2)) <= float(m.group(1)) and int(m.group(3)) > 0
    assert b" ttft_ms=- " in plain and b"request_id=chatcmpl-" in plain


def _raw_worker(big: int):
    """A loopback worker whose streamed answer carries one event of ``big`` bytes (over the
    scanner's size limit); GETs get a model list. Returns (url, stop)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    events = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b"data: " + b"x" * big + b"\n\n",
              b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n', b"data: [DONE]\n\n"]
    stream = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    models = b'{"object":"list","data":[{"id":"mock-model","object":"model","owned_by":"raw"}]}'

    def serve(conn):
        conn.settimeout(10)
        buf = b""
        with conn:
            for _ in range(100):                     # requests per connection, bounded
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                need = int(m.group(1)) if m else 0
                while len(buf) < need:
                    buf += conn.recv(65536)
                buf = buf[need:]
                if head.startswith(b"POST"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n" + stream)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(models), models))

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        srv.close()

    threading.Thread(target=accept, daemon=True).start()
    return "http://127.0.0.1:%d" % srv.getsockname()[1], stop.set


def test_event_over_the_scanner_limit_still_reaches_the_client():
    # observing the stream fails (the event is over 8 MiB); relaying it must not
    big = DEFAULT_MAX_EVENT_SIZE + 1024
    url, stop = _raw_worker(big)
    try:
        with GatewayHarness(workers=[], extra_worker_urls=(url,), disable_health_check=True) as h:
            for _ in range(200):                      # registration is asynchronous
                if h.on_loop(lambda: h.gw.registry.candidates(None)):
                    break
                time.sleep(0.025)
            assert h.on_loop(lambda: h.gw.registry.candidates(None))
            for _ in range(2):                        # the connection stays usable
                status, headers, body = rawhttp.request(
                    h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s"
                    % (len(STREAM), STREAM), methods=["POST"])[0]
                assert status == 200
                assert body.count(b"data: ") == 4 and body.endswith(b"data: [DONE]\n\n")
                assert b"x" * big in body and b'"error"' not in body
            m = scrape(h)
            assert val(m, "smg_router_requests_total", router_type="http", backend_type="regular",
                       connection_mode="http", model="mock-model", endpoint="chat", streaming="true") == 2
            assert val(m, "smg_router_ttft_seconds_count", router_type="http", backend_type="regular",
                       model="mock-model", endpoint="chat") == 0      # untimed, not failed
            assert not [k for k, v in m.items() if k[0] == "smg_router_request_errors_total" and v]
            assert val(m, "smg_http_responses_total", path="/v1/chat/completions", status_code="200",
                       error_code="") == 2
    finally:
        stop()
