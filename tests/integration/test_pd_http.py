"""Prefill-decode disaggregation over HTTP (SGLang's bootstrap), through the running
gateway, against the rendezvousing PD mocks (smg/testing/pd_workers.py)."""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from smg.testing.harness import PdHarness
from smg.testing.mock_worker import MockConfig
from smg.testing.pd_workers import DECODE_LOGPROBS, PREFILL_LOGPROBS

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hello"}]}


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def pd():
    with PdHarness(prefills=1, decodes=1) as h:
        yield h


def _check_pair(h, path):
    p, d = h.prefills[0].received[-1], h.decodes[0].received[-1]
    assert p["path"] == d["path"] == path
    for f in ("bootstrap_host", "bootstrap_port", "bootstrap_room"):
        assert p[f] == d[f]
    assert p["bootstrap_host"] == "127.0.0.1"
    assert p["bootstrap_port"] == h.prefills[0].bootstrap_port
    assert isinstance(p["bootstrap_room"], int) and 0 <= p["bootstrap_room"] <= 2 ** 63 - 1
    assert d["rendezvous"] == "ok"
    return p["bootstrap_room"]


def test_generate_goes_to_both_and_decode_answers(pd):
    r = httpx.post(pd.url + "/generate", json={"text": "hello"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["x-smg-routed-worker-id"] == pd.decodes[0].url
    assert r.headers["x-mock-worker"] == "d1"
    assert r.json()["text"].startswith("Hello")
    room1 = _check_pair(pd, "/generate")
    httpx.post(pd.url + "/generate", json={"text": "hello"}, timeout=10)
    assert _check_pair(pd, "/generate") != room1   # a fresh room per request


def test_chat_non_streaming_and_streaming_with_the_sdk(pd):
    client = openai.OpenAI(base_url=pd.url + "/v1", api_key="x", timeout=10, max_retries=0)
    out = client.chat.completions.create(**CHAT)
    assert out.choices[0].message.content
    _check_pair(pd, "/v1/chat/completions")
    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    _check_pair(pd, "/v1/chat/completions")
    comp = client.completions.create(model="mock-model", prompt="hi")
    assert comp.choices[0].text
    _check_pair(pd, "/v1/completions")
    # prefill's streamed answer was drained in the background and its leg settled
    assert _wait(lambda: pd.on_loop(lambda: pd.gw.registry.all()[0].inflight) == 0)


def test_batched_generate_gets_one_room_per_element(pd):
    r = httpx.post(pd.url + "/generate", json={"input_ids": [[1, 2], [3, 4], [5, 6]]}, timeout=10)
    assert r.status_code == 200
    p, d = pd.prefills[0].received[-1], pd.decodes[0].received[-1]
    assert p["bootstrap_host"] == ["127.0.0.1"] * 3
    assert p["bootstrap_port"] == [pd.prefills[0].bootstrap_port] * 3
    rooms = p["bootstrap_room"]
    assert len(rooms) == 3 and len(set(rooms)) == 3 and rooms == d["bootstrap_room"]
    assert d["rendezvous"] == "ok" and pd.decodes[0].met == 3


def test_logprobs_merged_whole_and_streamed(pd):
    r = httpx.post(pd.url + "/generate", json={"text": "hi", "return_logprob": True}, timeout=10)
    assert r.status_code == 200
    meta = r.json()["meta_info"]
    assert meta["input_token_logprobs"] == PREFILL_LOGPROBS + DECODE_LOGPROBS
    r = httpx.post(pd.url + "/generate", json={"input_ids": [[1], [2]], "return_logprob": True}, timeout=10)
    assert [e["meta_info"]["input_token_logprobs"] for e in r.json()] == [PREFILL_LOGPROBS + DECODE_LOGPROBS] * 2
    with httpx.stream("POST", pd.url + "/generate", json={"text": "hi", "return_logprob": True, "stream": True},
                      timeout=10) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json
    docs = [json.loads(e) for e in events[:-1]]
    assert len(docs) == 2
    assert all(doc["meta_info"]["input_token_logprobs"] == PREFILL_LOGPROBS + DECODE_LOGPROBS for doc in docs)


def test_regular_traffic_never_reaches_pd_workers_and_pd_goes_to_pairs():
    with PdHarness(workers=[MockConfig(worker_id="r1", model="other-model")]) as h:
        r = httpx.post(h.url + "/v1/chat/completions",
                       json={"model": "other-model", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert r.status_code == 200 and r.headers["x-mock-worker"] == "r1"
        assert not h.prefills[0].received and not h.decodes[0].received
        r = httpx.post(h.url + "/v1/chat/completions", json=CHAT, timeout=10)
        # the mocks serve any model: a model with both roles goes PD
        assert r.status_code == 200 and r.headers["x-mock-worker"] in ("d1", "r1")


def test_dead_prefill_leg_retries_on_another_pair_without_hanging():
    with PdHarness(prefills=2, decodes=1, prefill_policy="round_robin", retry_max_retries=3,
                   request_timeout_secs=20) as h:
        h.run(h.prefills[0].stop())          # connection refused from now on
        for _ in range(4):   # no attempt waits out a rendezvous: a hang would be a ReadTimeout
            r = httpx.post(h.url + "/generate", json={"text": "x"}, timeout=5)
            assert r.status_code == 200
        recs = list(h.decodes[0].received)
        ok = [rec for rec in recs if rec.get("rendezvous") == "ok"]
        assert len(ok) == 4 and all(rec["bootstrap_port"] == h.prefills[1].bootstrap_port for rec in ok)
        # decode halves paired with the dead prefill were cancelled by the gateway, not timed out
        assert not any(rec.get("rendezvous") == "timeout" for rec in recs)


def test_prefill_error_status_cancels_decode_and_retries():
    with PdHarness(prefills=2, decodes=1, prefill_policy="round_robin", retry_max_retries=3) as h:
        h.prefills[0].config.fail_status = 503
        for _ in range(3):
            r = httpx.post(h.url + "/v1/completions", json={"model": "mock-model", "prompt": "x"}, timeout=15)
            assert r.status_code == 200
        # each decode attempt paired with the failing prefill was aborted, not left to time out
        assert not any(rec.get("rendezvous") == "timeout" for rec in h.decodes[0].received)


def test_prefill_refusal_is_answered_with_prefills_status():
    with PdHarness(retry_max_retries=1) as h:
        h.prefills[0].config.fail_status = 400
        r = httpx.post(h.url + "/v1/completions", json={"model": "mock-model", "prompt": "x"}, timeout=15)
        assert r.status_code == 400
        assert "injected failure" in r.json()["error"]["message"]


def test_decode_cut_mid_stream_ends_with_error_event_and_cancels_prefill():
    with PdHarness(prefill_kw={}, decode_kw={}) as h:
        h.prefills[0].config.ttft = 5.0       # prefill still busy when decode is cut
        h.decodes[0].config.fail_mode = "cut"
        with httpx.stream("POST", h.url + "/v1/chat/completions", json=dict(CHAT, stream=True), timeout=10) as s:
            assert s.status_code == 200
            body = "".join(s.iter_text())
        assert '"error"' in body
        assert _wait(lambda: h.prefills[0].stats.aborted + h.prefills[0].stats.cancelled == 1)


def test_readiness_needs_both_roles():
    with PdHarness(wait_ready=True) as h:
        assert httpx.get(h.url + "/readiness").status_code == 200
        h.decodes[0].config.health_status = 503
        # the decode worker leaves the ready set once its health checks fail
        h.on_loop(lambda: h.gw.registry.set_status(h.gw.registry.all()[1], "not_ready"))
        r = httpx.get(h.url + "/readiness")
        assert r.status_code == 503 and r.json()["reason"] == "no healthy prefill and decode workers"
        r = httpx.post(h.url + "/generate", json={"text": "x"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_available_workers"


def test_workers_api_joins_the_pools():
    with PdHarness(prefills=0, decodes=0, wait_ready=False) as h:
        assert httpx.get(h.url + "/readiness").status_code == 503
        from smg.testing.pd_workers import DecodeWorker, PrefillWorker
        p = h.run(PrefillWorker(MockConfig(worker_id="p9")).start())
        d = h.run(DecodeWorker(MockConfig(worker_id="d9")).start())
        try:
            r = httpx.post(h.url + "/workers", json={"url": p.url, "worker_type": "prefill",
                                                     "bootstrap_port": p.bootstrap_port}, timeout=10)
            assert r.status_code in (200, 202)
            assert _wait(lambda: httpx.get(h.url + "/readiness").status_code == 503)
            r = httpx.post(h.url + "/workers", json={"url": d.url, "worker_type": "decode"}, timeout=10)
            assert r.status_code in (200, 202)
            assert _wait(lambda: httpx.get(h.url + "/readiness").status_code == 200)
            r = httpx.post(h.url + "/generate", json={"text": "x"}, timeout=10)
            assert r.status_code == 200 and r.headers["x-mock-worker"] == "d9"
            assert p.received[-1]["bootstrap_port"] == p.bootstrap_port
        finally:
            h.run(p.stop())
            h.run(d.stop())


def test_pd_metrics():
    with PdHarness() as h:
        httpx.post(h.url + "/generate", json={"text": "x"}, timeout=10)
        assert _wait(lambda: "smg_pd_prefill_duration_seconds_count" in httpx.get(h.metrics_url).text)


@pytest.mark.parametrize("prefill_policy, decode_policy", [
    ("bucket", "cache_aware"), ("cache_aware", "power_of_two"), ("consistent_hashing", "round_robin")])
def test_policies_per_role(prefill_policy, decode_policy):
    with PdHarness(prefills=2, decodes=2, prefill_policy=prefill_policy, decode_policy=decode_policy) as h:
        for i in range(6):
            conv = dict(CHAT, messages=[{"role": "user", "content": "same first"},
                                        {"role": "assistant", "content": "a"},
                                        {"role": "user", "content": f"turn {i % 2}"}])
            r = httpx.post(h.url + "/v1/chat/completions", json=conv, timeout=10)
            assert r.status_code == 200
        assert sum(len(p.received) for p in h.prefills) == 6 and sum(len(d.received) for d in h.decodes) == 6
        assert all(rec["rendezvous"] == "ok" for d in h.decodes for rec in d.received)
