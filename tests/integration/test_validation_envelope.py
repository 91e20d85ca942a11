"""The envelope of the gateway's own errors, as SMG gives them: OpenAI bodies always
carry ``param``; Anthropic bodies repeat the request id; routing, limit and upstream
errors name their code in ``x-smg-error-code``, validation errors do not; the routes
SMG only decodes refuse in plain text."""
from __future__ import annotations

import http.client
import json

import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def gw():
    with GatewayHarness(workers=[MockConfig(worker_id="w1")], max_payload_size=4096) as h:
        yield h


def call(port, method, path, body=None, content_type="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"content-type": content_type} if content_type and body is not None else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_validation_error_names_param_and_no_code_header(gw):
    st, h, body = call(gw.port, "POST", "/v1/chat/completions", b'{"model":"mock-model","messages":[]}')
    assert st == 400 and "x-smg-error-code" not in h
    assert json.loads(body) == {"error": {"message": json.loads(body)["error"]["message"],
                                          "type": "invalid_request_error", "param": "messages",
                                          "code": "empty_array"}}


@pytest.mark.parametrize("method, path, body, status, code", [
    ("POST", "/v1/nothing", CHAT, 404, "unknown_url"),
    ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ("POST", "/v1/chat/completions", b'{"model":"no-such","messages":[{"role":"user","content":"x"}]}', 404,
     "model_not_found"),
    ("POST", "/v1/chat/completions", b'{"x":"' + b"a" * 5000 + b'"}', 413, "request_body_too_large"),
])
def test_gateway_errors_carry_their_code_header(gw, method, path, body, status, code):
    st, h, raw = call(gw.port, method, path, body)
    assert st == status and h["x-smg-error-code"] == code
    err = json.loads(raw)["error"]
    assert err["code"] == code and err["param"] is None and err["type"] == "invalid_request_error"


def test_anthropic_errors_repeat_the_request_id(gw):
    st, h, raw = call(gw.port, "POST", "/v1/messages",
                      b'{"model":"no-such","max_tokens":5,"messages":[{"role":"user","content":"x"}]}')
    assert st == 404 and h["x-smg-error-code"] == "model_not_found"
    doc = json.loads(raw)
    assert doc["type"] == "error" and doc["error"]["type"] == "not_found_error"
    assert doc["request_id"] == h["x-request-id"]
    st, h, raw = call(gw.port, "POST", "/v1/messages", b"{}", content_type="text/plain")
    doc = json.loads(raw)
    assert st == 400 and doc["error"] == {"type": "invalid_request_error",
                                          "message": "Missing Content-Type: application/json header"}


def test_plain_routes_refuse_in_plain_text(gw):
    st, h, raw = call(gw.port, "POST", "/v1/embeddings", b"{}", content_type="text/plain")
    assert st == 415 and h["content-type"].startswith("text/plain") and b"application/json" in raw
    st, h, raw = call(gw.port, "POST", "/generate", b'{"text":5}')
    assert st == 422 and h["content-type"].startswith("text/plain") and raw.startswith(b"Failed to deserialize")
    st, h, raw = call(gw.port, "POST", "/v1/rerank", b"{bad")
    assert st == 400 and h["content-type"].startswith("text/plain")


def test_connection_survives_a_plain_refusal(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        for body, status in [(b'{"text":5}', 422), (b'{"text":"hi"}', 200)]:
            c.request("POST", "/generate", body=body, headers={"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == status
    finally:
        c.close()
