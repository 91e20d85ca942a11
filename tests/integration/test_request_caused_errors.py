"""Retries and circuit breakers: SMG's attempt counts, and answers caused by the request
(not the worker) relayed at once without counting against any breaker.

Workers are test-local recording servers (tests/integration/recording_worker.py) whose
scripts answer 500 to invalid input, to a poisoned prompt, or always.
"""
from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.integration.recording_worker import RUST, Answer, Fleet, chat_answer, rust_gateway

JSON = (("content-type", "application/json"),)
FAST = {"retry_initial_backoff_ms": 1.0, "retry_max_backoff_ms": 5.0}


def chat(content: str = "hi", **kw) -> dict:
    return dict({"model": "mock-model", "messages": [{"role": "user", "content": content}]}, **kw)


def post(port: int, body: dict) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=15)


def validating(req) -> Answer:
    """An engine that answers 500 (not 400) to an invalid sampling field."""
    if json.loads(req.body).get("min_p_scale", 1) < 0:
        return Answer(500, b'{"object":"error","message":"Input validation error: min_p_scale must be at least 0",'
                           b'"type":"InternalServerError"}', JSON)
    return chat_answer()


def poisoned(req) -> Answer:
    """An engine that crashes (500, same text everywhere) on one prompt only."""
    body = json.loads(req.body)
    text = body["messages"][0]["content"]
    if text.startswith("poison"):
        return Answer(500, b'{"error":{"message":"engine crashed on ' + text.encode() + b'"}}', JSON)
    return chat_answer()


def always(status: int, tag: str = ""):
    def script(req) -> Answer:
        return Answer(status, b'{"error":{"message":"boom' + tag.encode() + b'"}}', JSON)
    return script


def states(h) -> list:
    return h.on_loop(lambda: [(w.breaker.state, w.breaker.consecutive_failures, w.status)
                              for w in h.gw.registry.all()])


def test_twenty_invalid_requests_leave_every_breaker_closed_and_the_workers_ready():
    with Fleet([validating] * 3) as fleet:
        h = fleet.gateway(cb_failure_threshold=2, **FAST)
        for _ in range(20):
            r = post(h.port, chat(min_p_scale=-1))
            assert r.status_code == 500 and "min_p_scale must be at least 0" in r.text
        assert sum(fleet.counts()) == 20                  # one attempt each: never retried
        assert states(h) == [("closed", 0, "ready")] * 3
        assert post(h.port, chat()).status_code == 200


def test_the_same_5xx_from_two_workers_is_the_request_s_and_not_counted():
    with Fleet([poisoned] * 3) as fleet:
        h = fleet.gateway(cb_failure_threshold=2, **FAST)
        for i in range(6):
            fleet.clear()
            r = post(h.port, chat(f"poison {i}"))
            assert r.status_code == 500 and f"engine crashed on poison {i}" in r.text
            assert sum(fleet.counts()) == 2               # two workers, one answer: relayed
        assert states(h) == [("closed", 0, "ready")] * 3


def test_a_failure_every_request_shares_is_the_workers_and_opens_the_breakers():
    with Fleet([always(500)] * 3) as fleet:
        h = fleet.gateway(cb_failure_threshold=4, **FAST)
        attempts = []
        for _ in range(5):
            fleet.clear()
            assert post(h.port, chat()).status_code == 500
            attempts.append(sum(fleet.counts()))
        # the first request cannot tell (two identical answers); then SMG's count: each
        # worker once (a worker that answered 500 is not tried again for that request)
        assert attempts[0] == 2 and attempts[1:4] == [3, 3, 3]
        assert [s for s, _, _ in states(h)] == ["open"] * 3
        fleet.clear()
        r = post(h.port, chat())
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "no_available_workers" and sum(fleet.counts()) == 0


def test_panic_routing_sends_to_workers_whose_breakers_are_open():
    with Fleet([always(500)] * 2) as fleet:
        h = fleet.gateway(cb_failure_threshold=1, panic_routing=True, **FAST)
        post(h.port, chat())
        post(h.port, chat())
        assert [s for s, _, _ in states(h)] == ["open"] * 2
        fleet.clear()
        assert post(h.port, chat()).status_code == 500 and sum(fleet.counts()) >= 1


def test_attempt_counts_by_status():
    with Fleet([always(500, "a")]) as fleet:            # one worker, 500: no second attempt
        h = fleet.gateway(**FAST)
        assert post(h.port, chat()).status_code == 500 and fleet.counts() == [1]
    with Fleet([always(503, "a")]) as fleet:            # 503 may go back to the same worker
        h = fleet.gateway(**FAST)
        assert post(h.port, chat()).status_code == 503 and fleet.counts() == [5]
    with Fleet([always(500, str(i)) for i in range(6)]) as fleet:   # distinct 500s: 5 distinct workers
        h = fleet.gateway(**FAST)
        assert post(h.port, chat()).status_code == 500
        assert sorted(fleet.counts()) == [0, 1, 1, 1, 1, 1]


def test_transport_errors_are_retried_and_counted():
    with Fleet([always(0)] * 2) as fleet:
        h = fleet.gateway(cb_failure_threshold=3, **FAST)
        r = post(h.port, chat())
        assert r.status_code >= 500 and sum(fleet.counts()) == 5   # may repeat a worker, unlike a 500
        assert sorted((s, n) for s, n, _ in states(h)) == [("closed", 2), ("open", 3)]


@pytest.mark.skipif(not os.path.exists(RUST), reason="the Rust SMG binary is not installed")
@pytest.mark.parametrize("status", [500, 429])
def test_attempts_equal_the_rust_smg_s(status):
    scripts = [always(status, str(i)) for i in range(3)]   # distinct bodies: no request-caused verdict
    with Fleet(scripts) as fleet:
        p, port = rust_gateway(fleet.urls)
        try:
            post(port, chat())
            rust = sum(c for c in fleet.counts())
        finally:
            p.terminate()
            p.wait(10)
        fleet.clear()
        h = fleet.gateway()
        post(h.port, chat())
        assert sum(fleet.counts()) == rust == (3 if status == 500 else 5)
