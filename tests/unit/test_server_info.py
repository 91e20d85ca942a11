"""smg.workers.server_info: the labels and card facts read from an engine at registration."""
from __future__ import annotations

import asyncio

import orjson

from smg.errors import UpstreamError
from smg.workers.server_info import DEFAULT_MODEL_TYPE, Description, api_card, describe

CARD = {"id": "m", "object": "model", "owned_by": "vllm", "root": "/models/m", "max_model_len": 4096, "created": 1}


def fetcher(answers: dict, asked: list | None = None):
    async def fetch(path):
        if asked is not None:
            asked.append(path)
        got = answers.get(path)
        if isinstance(got, Exception):
            raise got
        if got is None:
            return 404, (), b'{"error": "not found"}'
        return 200, (), got if isinstance(got, bytes) else orjson.dumps(got)
    return fetch


def run(coro):
    return asyncio.run(coro)


def test_vllm_labels_come_from_the_card_and_version():
    asked: list = []
    d = run(describe(fetcher({"/version": {"version": "0.9.1"}}, asked), "vllm", [CARD]))
    assert d.labels == {"served_model_name": "m", "model_path": "/models/m", "version": "0.9.1",
                        "max_model_len": "4096"}
    assert asked == ["/version"] and d.context_length is None


def test_sglang_labels_are_the_listed_keys_of_server_and_model_info():
    server = {"model_path": "mp-s", "served_model_name": "m", "version": "0.5", "tp_size": 2, "dp_size": 1,
              "context_length": 8192, "is_embedding": False, "chat_template": "x", "tool_call_parser": "y",
              "max_total_num_tokens": 5, "architectures": ["A"], "tokenizer_path": "tp-s"}
    model = {"model_path": "mp-m", "tokenizer_path": "tp-m", "is_generation": True, "weight_version": "w"}
    d = run(describe(fetcher({"/server_info": server, "/model_info": model}), "sglang", [CARD]))
    assert d.labels == {"model_path": "mp-m", "tokenizer_path": "tp-m", "served_model_name": "m", "version": "0.5",
                        "tp_size": "2", "dp_size": "1", "context_length": "8192", "is_embedding": "false",
                        "is_generation": "true", "max_model_len": "4096"}
    assert d.context_length == 8192 and d.tokenizer_path == "tp-m"


def test_sglang_falls_back_to_the_get_names():
    asked: list = []
    d = run(describe(fetcher({"/get_server_info": {"version": "0.4"}, "/get_model_info": {"model_path": "p"}},
                             asked), "sglang", None))
    assert d.labels == {"version": "0.4", "model_path": "p"}
    assert asked == ["/server_info", "/get_server_info", "/model_info", "/get_model_info"]


def test_a_failing_or_odd_endpoint_contributes_nothing():
    answers = {"/server_info": UpstreamError("reset"), "/model_info": b"not json", "/get_model_info": [1, 2]}
    assert run(describe(fetcher(answers), "sglang", [])).labels == {}
    assert run(describe(fetcher({"/version": UpstreamError("x")}), "openai", [{"id": "m"}])).labels == {
        "served_model_name": "m"}


def test_api_card_shows_smg_fields_only():
    card = api_card(CARD)
    assert card == {"id": "m", "model_type": list(DEFAULT_MODEL_TYPE), "context_length": 4096}
    desc = Description({}, context_length=8192, tokenizer_path="tp")
    assert api_card(CARD, desc) == {"id": "m", "model_type": list(DEFAULT_MODEL_TYPE), "context_length": 8192,
                                    "tokenizer_path": "tp"}
    given = {"id": "g", "model_type": ["embeddings"], "context_length": 512, "aliases": ["a"], "object": "model"}
    assert api_card(given, desc) == {"id": "g", "model_type": ["embeddings"], "context_length": 512,
                                     "aliases": ["a"], "tokenizer_path": "tp"}
    assert api_card({"id": "bare"}) == {"id": "bare", "model_type": list(DEFAULT_MODEL_TYPE)}
