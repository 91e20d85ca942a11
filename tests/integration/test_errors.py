"""Every error status the gateway produces, from a real bad request, in the API's format."""
import json
import socket

import openai
import pytest

from smg.testing.mock_worker import MockConfig

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


def post(port, path, body, extra=b"", conn=b""):
    raw = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n%s" % (
        path, len(body), extra, conn, body)
    return rawhttp.request(port, raw, methods=["POST"])[0]


def assert_openai_error(resp, status, code=None):
    st, headers, body = resp
    assert st == status
    assert headers["content-type"] == "application/json"
    assert "x-request-id" in headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code
    return err


def test_400_malformed_json(gateway):
    assert_openai_error(post(gateway.port, b"/v1/chat/completions", b'{"model": '), 400, "invalid_json")
    assert_openai_error(post(gateway.port, b"/v1/chat/completions", b'[1,2]'), 400, "invalid_type")


def test_400_missing_or_mistyped_fields(gateway):
    err = assert_openai_error(post(gateway.port, b"/v1/chat/completions", b'{"model":"mock-model"}'), 400,
                              "missing_required_parameter")
    assert err["param"] == "messages" and "messages" in err["message"]
    # embeddings are decoded without typed validation: a plain-text 422
    st, headers, body = post(gateway.port, b"/v1/embeddings", b'{"model":"mock-model"}')
    assert st == 422 and headers["content-type"].startswith("text/plain") and b"input" in body
    err = assert_openai_error(post(gateway.port, b"/v1/completions", b'{"model":7,"prompt":"x"}'), 400, "invalid_type")
    assert err["param"] == "model"


def test_400_malformed_http(gateway):
    # Content-Length together with Transfer-Encoding: a smuggling attempt
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
    with rawhttp.connect(gateway.port) as s:
        s.sendall(raw)
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
        assert rawhttp.closed_by_peer(s)


def test_404_unknown_path_and_model(gateway):
    assert_openai_error(post(gateway.port, b"/v1/nothing", CHAT), 404, "unknown_url")
    body = b'{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}'
    assert_openai_error(post(gateway.port, b"/v1/chat/completions", body), 404, "model_not_found")


def test_405_wrong_method(gateway):
    (st, headers, body), = rawhttp.request(gateway.port, b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
    assert st == 405 and headers["allow"] == "POST"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_413_payload_too_large(make_gateway):
    h = make_gateway(max_payload_size=1000)
    big = b'{"model":"mock-model","messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}'
    with rawhttp.connect(h.port) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(big))
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 413 and json.loads(body)["error"]["code"] == "request_body_too_large"
    # chunked bodies are counted as they arrive
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 300]), big[i:i + 300]) for i in range(0, len(big), 300))
    (st, _, _), = rawhttp.request(h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                                  b"transfer-encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n", methods=["POST"])
    assert st == 413
    with pytest.raises(openai.APIStatusError) as e:
        openai.OpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "x" * 2000}])
    assert e.value.status_code == 413


def test_431_header_too_large(make_gateway):
    h = make_gateway(max_header_size=2048)
    raw = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4096 + b"\r\n\r\n"
    (st, _, body), = rawhttp.request(h.port, raw)
    assert st == 431 and json.loads(body)["error"]["code"] == "request_header_fields_too_large"


def test_502_worker_resets(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_mode="reset")])
    err = assert_openai_error(post(h.port, b"/v1/chat/completions", CHAT), 502, "call_upstream_request_error")
    assert err["type"] == "server_error"


def test_502_worker_gone(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a")])
    h.run(h.workers[0].stop())
    assert_openai_error(post(h.port, b"/v1/chat/completions", CHAT), 502)


def test_503_no_healthy_worker(make_gateway):
    # a worker URL nobody listens on never becomes ready
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    h = make_gateway(workers=[], worker_urls=[f"http://127.0.0.1:{port}"])
    assert_openai_error(post(h.port, b"/v1/chat/completions", CHAT), 503, "no_healthy_workers")
    (st, _, body), = rawhttp.request(h.port, b"GET /readiness HTTP/1.1\r\nhost: x\r\n\r\n")
    assert st == 503 and json.loads(body)["total_workers"] == 1


def test_504_upstream_timeout(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_mode="hang")], request_timeout_secs=0.3)
    err = assert_openai_error(post(h.port, b"/v1/chat/completions", CHAT), 504, "call_upstream_timeout")
    assert err["type"] == "server_error"
    # the hung worker connection was closed, not pooled
    assert h.on_loop(lambda: h.gw.registry.all()[0].pool.idle_count) == 0


def test_anthropic_format_on_messages(gateway):
    st, headers, body = post(gateway.port, b"/v1/messages", b"{nope")
    assert st == 400
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"


def test_connection_survives_errors(gateway):
    """After a 4xx the same keep-alive connection serves the next request."""
    with rawhttp.connect(gateway.port) as s:
        for body, status in [(b"{bad", 400), (CHAT, 200), (b'{"model":"zz","messages":[]}', 400),
                             (b'{"model":"zz","messages":[{"role":"user","content":"hi"}]}', 404), (CHAT, 200)]:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
            (st, _, _), = rawhttp.read_responses(s, 1, ["POST"])
            assert st == status
