"""The parsers on HTTP workers' chat answers (``--http-parse-output``, the worker label
``parse_output``): a recording worker answers with raw model text (a DeepSeek-R1
thinking block and a Hermes ``<tool_call>``), as a server that does not parse would,
and the ``openai`` SDK must get ``reasoning_content`` and ``tool_calls``, streamed
(content split at awkward points, markers across chunks) and not. Without the opt-in the
answer is relayed byte for byte."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import chat_stream_parts, wait_for
from tests.integration.recording_worker import Answer, Fleet, chat_answer, sse_chunk

openai = pytest.importorskip("openai")

THINKING = "Weather needs the tool."
CONTENT = "One moment."
ARGS = {"city": "Zürich", "days": 2}
RAW = (THINKING + "</think>" + CONTENT + '<tool_call>\n{"name": "get_weather", "arguments": '
       + json.dumps(ARGS, ensure_ascii=False) + "}\n</tool_call>")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]
MESSAGES = [{"role": "user", "content": "Weather?"}]
PIECES = [RAW[i:i + 5] for i in range(0, len(RAW), 5)]   # markers fall across chunks


def _script(req):
    body = json.loads(req.body)
    if body.get("stream"):
        chunks = [sse_chunk(p) for p in PIECES] + [sse_chunk("", "stop")]
        return Answer(200, chunks=chunks, end="done")
    return chat_answer(RAW)


@pytest.fixture(scope="module")
def fleet():
    with Fleet([_script]) as f:
        yield f


@pytest.fixture(scope="module")
def parsed(fleet):
    h = fleet.gateway(http_parse_output=True, reasoning_parser="deepseek_r1", tool_call_parser="qwen")
    return openai.OpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def plain(fleet):
    return fleet.gateway(reasoning_parser="deepseek_r1", tool_call_parser="qwen")


def test_whole_answer_is_parsed(parsed):
    r = parsed.chat.completions.create(model="mock-model", messages=MESSAGES, tools=TOOLS)
    msg = r.choices[0].message
    assert msg.reasoning_content == THINKING and msg.content == CONTENT
    [call] = msg.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGS
    assert call.id.startswith("call_") and call.type == "function"
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.usage.total_tokens == 2   # the rest of the worker's body is kept


def test_streamed_answer_is_parsed(parsed):
    got = chat_stream_parts(parsed.chat.completions.create(model="mock-model", messages=MESSAGES, tools=TOOLS,
                                                           stream=True))
    assert "".join(got["reasoning"]) == THINKING and len(got["reasoning"]) > 1
    assert "".join(got["content"]) == CONTENT
    [call] = got["calls"].values()
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["args"]) == ARGS
    finish = got["finish"]
    assert finish == "tool_calls"


def test_without_tools_only_reasoning_is_split(parsed):
    r = parsed.chat.completions.create(model="mock-model", messages=MESSAGES)
    msg = r.choices[0].message
    assert msg.reasoning_content == THINKING and msg.content.startswith(CONTENT + "<tool_call>")
    assert msg.tool_calls is None and r.choices[0].finish_reason == "stop"


def test_without_the_opt_in_the_answer_is_relayed_as_it_came(plain):
    r = httpx.post(plain.url + "/v1/chat/completions", timeout=10,
                   json={"model": "mock-model", "messages": MESSAGES, "tools": TOOLS})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": RAW}
    with httpx.stream("POST", plain.url + "/v1/chat/completions", timeout=10,
                      json={"model": "mock-model", "messages": MESSAGES, "tools": TOOLS, "stream": True}) as s:
        raw = b"".join(s.iter_bytes())
    want = b"".join(sse_chunk(p) for p in PIECES) + sse_chunk("", "stop") + b"data: [DONE]\n\n"
    assert raw == want


def _label(h, value: str) -> None:
    [w] = httpx.get(h.url + "/workers", timeout=10).json()["workers"]
    r = httpx.patch(f"{h.url}/workers/{w['id']}", json={"labels": {"parse_output": value}}, timeout=10)
    assert r.status_code == 202, r.text
    assert wait_for(lambda: httpx.get(f"{h.url}/workers/{w['id']}", timeout=10).json().get("labels", {})
                    .get("parse_output") == value, 10), "the label never reached the worker"


def _reasoning(h):
    r = httpx.post(h.url + "/v1/chat/completions", timeout=10, json={"model": "mock-model", "messages": MESSAGES})
    return r.json()["choices"][0]["message"].get("reasoning_content")


def test_the_worker_label_turns_parsing_on_and_off(fleet):
    """(The fleet stops the gateways it started.)"""
    h = fleet.gateway(reasoning_parser="deepseek_r1")
    assert _reasoning(h) is None
    _label(h, "true")
    assert _reasoning(h) == THINKING
    h = fleet.gateway(reasoning_parser="deepseek_r1", http_parse_output=True)
    assert _reasoning(h) == THINKING
    _label(h, "false")   # the label wins over the flag
    assert _reasoning(h) is None
