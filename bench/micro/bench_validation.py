"""Micro-benchmark of request validation (smg/api/validate) on already-parsed bodies:
the cost the validation stage adds to a valid request, and to a refused one.

Workloads:
- ``chat_small``: a 1-message chat request (model, messages, max_tokens, stream).
- ``chat_typical``: an SDK-style chat request: system + user + assistant turns,
  temperature, top_p, max_tokens, stream with stream_options, one tool, tool_choice.
- ``messages``: an Anthropic Messages request with a system prompt and a text block.
- ``chat_refused``: a body refused in phase 2 (temperature out of range).

Run: ``python bench/micro/bench_validation.py`` (ns per call, timeit), or
``python -m pytest bench/micro/bench_validation.py --benchmark-only``. Each benchmark
checks the verdict, so it cannot pass on a broken validator; timing decides nothing.
"""
from __future__ import annotations

import timeit

import orjson

from smg.api import validate as V

CHAT_SMALL = orjson.loads(b'{"model":"mock-model","messages":[{"role":"user","content":"Hello, how are you?"}],'
                          b'"max_tokens":64,"stream":false}')
CHAT_TYPICAL = orjson.loads(orjson.dumps({
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "What is the weather in Paris?"},
                 {"role": "assistant", "content": "Let me check."},
                 {"role": "user", "content": [{"type": "text", "text": "Please hurry."}]}],
    "temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto",
}))
MESSAGES = orjson.loads(orjson.dumps({
    "model": "claude", "max_tokens": 512, "system": "Be brief.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "temperature": 0.5,
}))
CHAT_REFUSED = dict(CHAT_SMALL, temperature=-5)

WORKLOADS = {
    "chat_small": (V.CHAT, CHAT_SMALL, None),
    "chat_typical": (V.CHAT, CHAT_TYPICAL, None),
    "messages": (V.MESSAGES, MESSAGES, None),
    "chat_refused": (V.CHAT, CHAT_REFUSED, "decimal_below_min_value"),
}


def _check(v, body, code):
    r = v.check(body)
    assert (r.code if r is not None else None) == code
    return r


def test_chat_small(benchmark):
    v, b, code = WORKLOADS["chat_small"]
    benchmark(_check, v, b, code)


def test_chat_typical(benchmark):
    v, b, code = WORKLOADS["chat_typical"]
    benchmark(_check, v, b, code)


def test_messages(benchmark):
    v, b, code = WORKLOADS["messages"]
    benchmark(_check, v, b, code)


def test_chat_refused(benchmark):
    v, b, code = WORKLOADS["chat_refused"]
    benchmark(_check, v, b, code)


def main() -> None:
    """Prints ns per validation and, for scale, ns per ``orjson.loads`` of the same body
    (the parse every request pays anyway)."""
    # many short runs, the best kept: on a shared machine a short run escapes the
    # other processes' time slices more often than a long one
    n, repeat = 2_000, 300
    for name, (v, body, code) in WORKLOADS.items():
        _check(v, body, code)
        check = v.check
        raw = orjson.dumps(body)
        best = min(timeit.repeat(lambda: check(body), number=n, repeat=repeat))
        parse = min(timeit.repeat(lambda: orjson.loads(raw), number=n, repeat=repeat))
        print(f"{name:14s} {best / n * 1e9:8.0f} ns per request   (orjson.loads of its {len(raw)} bytes: "
              f"{parse / n * 1e9:.0f} ns)")


if __name__ == "__main__":
    main()
