"""What reaches the worker: the header allow-list, the request id upstream and the
``x-smg-routed-worker-id`` answer header, over real sockets with a header-recording
worker (tests/integration/recording_worker.py).

When the Rust SMG binary is present (bench/.venvs/smg-rust/bin/smg) the same request
is sent through it too and the set of header names the worker saw must be the same.
"""
from __future__ import annotations

import os
import uuid

import httpx
import pytest

from tests.integration.recording_worker import RUST, Fleet, ok_script, rust_gateway

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}

# one of every kind: the allow-list, credentials, proxies, SDK headers, custom, x-smg-*
CLIENT_HEADERS = {
    "authorization": "Bearer client-key", "x-request-id": "client-rid-1", "x-request-id-extra": "e1",
    "x-correlation-id": "corr-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "k=v", "x-smg-routing-key": "rk1", "anthropic-version": "2023-06-01", "anthropic-beta": "b1",
    "cookie": "a=b", "x-api-key": "xk", "x-forwarded-for": "1.2.3.4", "openai-organization": "org",
    "x-custom": "c", "x-smg-priority": "bulk", "x-smg-tenant-id": "t1", "user-agent": "probe/1",
    "accept": "application/json", "accept-encoding": "gzip", "x-trace-id": "tid", "baggage": "a=1",
    "x-request-idx": "no", "x-correlation-id-2": "no", "x-stainless-os": "Linux",
}
ALLOWED = {"authorization", "x-request-id", "x-request-id-extra", "x-correlation-id", "traceparent", "tracestate",
           "x-smg-routing-key", "anthropic-version", "anthropic-beta"}
GATEWAY_SET = {"host", "content-type", "content-length"}


def _post(port: int, headers: dict | None = None, body: dict | None = None) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body or CHAT, headers=headers,
                      timeout=10)


@pytest.fixture
def fleet():
    with Fleet([ok_script]) as f:
        yield f


def test_only_the_allow_list_and_the_gateway_s_own_headers_reach_the_worker(fleet):
    h = fleet.gateway()
    r = _post(h.port, CLIENT_HEADERS)
    assert r.status_code == 200
    (seen,) = fleet.workers[0].requests
    assert set(seen.names()) == ALLOWED | GATEWAY_SET
    assert seen.header("content-type") == "application/json"
    assert seen.header("authorization") == "Bearer client-key"
    assert seen.header("x-request-id") == "client-rid-1"      # the client's id, as it sent it
    assert r.headers["x-request-id"] == "client-rid-1"
    assert r.headers["x-smg-routed-worker-id"] == fleet.urls[0]


def test_without_a_client_id_none_goes_upstream_but_the_answer_has_the_gateway_s(fleet):
    h = fleet.gateway()
    r = _post(h.port)
    (seen,) = fleet.workers[0].requests
    assert seen.header("x-request-id") is None
    assert r.headers["x-request-id"].startswith("chatcmpl-")


def test_uuid4_mode_sends_a_fresh_uuid_only_when_the_client_sent_none(fleet):
    h = fleet.gateway(upstream_request_id="uuid4")
    r1 = _post(h.port)
    r2 = _post(h.port, {"x-request-id": "mine"})
    first, second = fleet.workers[0].requests
    minted = first.header("x-request-id")
    assert uuid.UUID(minted).version == 4 and minted != r1.headers["x-request-id"]
    assert second.header("x-request-id") == "mine" and r2.headers["x-request-id"] == "mine"


def test_forward_headers_widens_the_list_by_name_and_prefix(fleet):
    h = fleet.gateway(forward_headers=["x-custom", "x-stainless-*"])
    _post(h.port, CLIENT_HEADERS)
    (seen,) = fleet.workers[0].requests
    assert set(seen.names()) == ALLOWED | GATEWAY_SET | {"x-custom", "x-stainless-os"}


def test_forward_all_headers_forwards_every_end_to_end_header(fleet):
    h = fleet.gateway(forward_all_headers=True)
    _post(h.port, CLIENT_HEADERS)
    (seen,) = fleet.workers[0].requests
    names = set(seen.names())
    assert set(CLIENT_HEADERS) <= names and "connection" not in names
    assert seen.names().count("content-type") == 1


def test_a_worker_key_replaces_the_client_s_authorization(fleet):
    h = fleet.gateway()
    h.on_loop(lambda: setattr(h.gw.registry.all()[0], "api_key", b"sk-worker"))
    _post(h.port, {"authorization": "Bearer client-key"})
    (seen,) = fleet.workers[0].requests
    assert seen.names().count("authorization") == 1 and seen.header("authorization") == "Bearer sk-worker"


@pytest.mark.skipif(not os.path.exists(RUST), reason="the Rust SMG binary is not installed")
def test_the_same_headers_arrive_as_through_the_rust_smg(fleet):
    p, port = rust_gateway(fleet.urls)
    try:
        assert _post(port, CLIENT_HEADERS).status_code == 200
        rust_seen = [s for s in fleet.workers[0].requests if s.method == "POST"][-1]
        rust_routed = _post(port).headers["x-smg-routed-worker-id"]
    finally:
        p.terminate()
        p.wait(10)
    fleet.clear()
    h = fleet.gateway()
    r = _post(h.port, CLIENT_HEADERS)
    (ours,) = fleet.workers[0].requests
    # SMG's HTTP client also adds its own "accept: */*"
    assert set(ours.names()) == set(rust_seen.names()) - {"accept"}
    for n in ALLOWED:
        assert ours.header(n) == rust_seen.header(n)
    assert r.headers["x-smg-routed-worker-id"] == rust_routed
