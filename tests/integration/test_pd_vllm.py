"""Prefill-decode with vLLM's KV-transfer handoff over HTTP, through the running gateway:
prefill gets the one-token copy, its returned ``kv_transfer_params`` reach decode, whose
answer the client gets (the mocks of smg/testing/pd_workers.py check the round trip)."""
from __future__ import annotations

import httpx
import openai

from smg.testing.harness import PdHarness

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


def test_vllm_handoff_round_trip_streaming_and_not():
    with PdHarness(vllm=True) as h:
        assert h.gw.registry.all()[0].runtime == "vllm"
        client = openai.OpenAI(base_url=h.url + "/v1", api_key="x", timeout=10, max_retries=0)
        out = client.chat.completions.create(**CHAT)
        assert out.choices[0].message.content.startswith("Hello")      # decode's answer, not prefill's "x"
        p, d = h.prefills[0].received[-1], h.decodes[0].received[-1]
        assert p["max_tokens"] == 1 and p["stream"] is False
        assert p["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False}
        assert d["kv_transfer_params"]["do_remote_prefill"] is True
        assert d["kv_transfer_params"]["remote_port"] == h.prefills[0].bootstrap_port
        assert d["rendezvous"] == "ok" and "bootstrap_room" not in h.decodes[0].stats.last_body
        chunks = list(client.chat.completions.create(**CHAT, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert h.prefills[0].received[-1]["stream"] is False and h.decodes[0].received[-1]["rendezvous"] == "ok"
        r = httpx.post(h.url + "/v1/completions", json={"model": "mock-model", "prompt": "hi", "max_tokens": 9},
                       timeout=10)
        assert r.status_code == 200 and h.decodes[0].received[-1]["rendezvous"] == "ok"
        assert h.prefills[0].issued == 3 and h.decodes[0].met == 3


def test_vllm_prefill_failure_retries_without_reaching_decode():
    with PdHarness(vllm=True, prefills=2, prefill_policy="round_robin") as h:
        h.prefills[0].config.fail_status = 503
        for _ in range(3):
            r = httpx.post(h.url + "/v1/chat/completions", json=CHAT, timeout=10)
            assert r.status_code == 200
        # decode is asked only after a prefill succeeded: every decode request carried params
        assert all(rec["rendezvous"] == "ok" for rec in h.decodes[0].received)
        assert len(h.decodes[0].received) == 3
