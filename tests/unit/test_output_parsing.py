"""smg.server.output_parsing: HTTP workers' chat answers through the parsers. The
streamed rewriter against the whole-body reshaper for any chunking of the content and
any network split of the bytes (Hypothesis), and the edge cases: text held back at a
chunk, a stream that ends without a finish reason, bytes that are not chat objects."""
from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.generation.parsing import Parsers
from smg.http1.events import Data, EndOfMessage
from smg.server.output_parsing import StreamParsing, reshaper

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
RAW = 'think 1 2</think>say <tool_call>\n{"name": "f", "arguments": {"a": [1, "ü"]}}\n</tool_call> tail'


def parsers():
    return Parsers("deepseek_r1", "qwen", tools=TOOLS, chat_template_kwargs={})


def chunk(content=None, finish=None, role=None) -> bytes:
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    obj = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def run(transform, data: bytes, cuts) -> list:
    events, start = [], 0
    for end in [*sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]:
        events.append(Data(data[start:end]))
        start = end
    out = []
    for ev in events:
        r = transform([ev])
        out.extend(ev for ev in (r if r is not None else [ev]))
    out.extend(transform([EndOfMessage()]) or [])
    raw = b"".join(e.data for e in out if type(e) is Data)
    return [e[6:] for e in raw.split(b"\n\n") if e]


def whole() -> dict:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": RAW}, "finish_reason": "stop"}]}
    return orjson.loads(reshaper(parsers())(orjson.dumps(body)))["choices"][0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, len(RAW) - 1), max_size=15), st.lists(st.integers(1, 2000), max_size=8))
def test_streamed_deltas_join_to_the_whole_answer(content_cuts, byte_cuts):
    bounds = [0, *sorted(set(content_cuts)), len(RAW)]
    pieces = [RAW[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    data = chunk("", role="assistant") + b"".join(chunk(p) for p in pieces) + chunk(None, "stop") + b"data: [DONE]\n\n"
    payloads = run(StreamParsing(parsers()), data, byte_cuts)
    assert payloads[-1] == b"[DONE]"
    deltas = [orjson.loads(p)["choices"][0] for p in payloads[:-1]]
    want = whole()
    msg = want["message"]
    assert "".join(d["delta"].get("reasoning_content", "") for d in deltas) == msg["reasoning_content"]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == msg["content"]
    calls = [c for d in deltas for c in d["delta"].get("tool_calls", ())]
    assert "".join(c["function"]["arguments"] for c in calls) == msg["tool_calls"][0]["function"]["arguments"]
    assert [c["function"]["name"] for c in calls if "id" in c] == ["f"]
    assert deltas[-1]["finish_reason"] == want["finish_reason"] == "tool_calls"
    assert deltas[0]["delta"] == {"role": "assistant", "content": ""}


def test_whole_answer_fields():
    c = whole()
    assert c["message"]["reasoning_content"] == "think 1 2"
    assert c["message"]["content"] == "say "   # the qwen format keeps the text before its calls
    assert json.loads(c["message"]["tool_calls"][0]["function"]["arguments"]) == {"a": [1, "ü"]}
    assert "index" not in c["message"]["tool_calls"][0]


def test_a_stream_without_a_finish_reason_gets_the_tails_before_done():
    data = chunk("abc</thi") + b"data: [DONE]\n\n"
    payloads = run(StreamParsing(parsers()), data, ())
    assert payloads[-1] == b"[DONE]"
    deltas = [orjson.loads(p)["choices"][0]["delta"] for p in payloads[:-1]]
    # "</thi" could still have been "</think>": held back, then released as reasoning
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "abc</thi"


def test_non_chat_bytes_pass_unchanged():
    data = b'data: {"error": {"message": "x"}}\n\n' + b"data: not json\n\n"
    assert run(StreamParsing(parsers()), data, (7,)) == [b'{"error": {"message": "x"}}', b"not json"]
    assert reshaper(parsers())(b"not json") is None
    assert reshaper(parsers())(b'{"object": "error"}') is None
