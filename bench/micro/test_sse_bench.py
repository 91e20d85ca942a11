"""Micro-benchmarks of the SSE scanner twins (smg.streaming.sse), C vs Py.

Run: pytest bench/micro/test_sse_bench.py --benchmark-only
Each case records the stream size and MB/s in extra_info (shown with --benchmark-json).
Timings never gate pass/fail; the asserts only check that the work was done.
"""

from __future__ import annotations

import json

import pytest

from smg.streaming.sse import SSEScannerC, SSEScannerPy
from smg.testing.twins import twin_params

TWINS = twin_params(SSEScannerPy, SSEScannerC)
KIB = 1024

# A realistic chat completion: 200 events (role, 196 content deltas, finish, usage,
# [DONE]) in the shape vLLM / SGLang / OpenAI send, about 50 KB.
_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while"]


def _chunk(delta: dict, finish=None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-5d1b7c9e2f4a4c7f9f6a0e2b8c3d1a47",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        },
        separators=(",", ":"),
    ).encode()


_USAGE = (
    b'{"id":"chatcmpl-5d1b7c9e2f4a4c7f9f6a0e2b8c3d1a47","object":"chat.completion.chunk",'
    b'"created":1700000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],'
    b'"usage":{"prompt_tokens":57,"completion_tokens":197,"total_tokens":254}}'
)
_EVENTS = (
    [_chunk({"role": "assistant", "content": ""})]
    + [_chunk({"content": " " + _WORDS[i % len(_WORDS)]}) for i in range(196)]
    + [_chunk({}, "stop"), _USAGE, b"[DONE]"]
)
assert len(_EVENTS) == 200


def _render(term: bytes) -> list[bytes]:
    return [b"data: " + e + term + term for e in _EVENTS]


CHAT_EVENTS = _render(b"\n")
CHAT = b"".join(CHAT_EVENTS)
CHAT_CRLF = b"".join(_render(b"\r\n"))
BIG_EVENT = b"data: " + b"QUJD" * (256 * KIB) + b"\n\n"  # 1 MiB of base64-like payload


def _split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def _scan(cls, pieces):
    s = cls()
    n = 0
    for piece in pieces:
        n += len(s.feed(piece))
    s.feed_eof()
    return s, n


def _run(benchmark, cls, pieces, expect_events):
    s, n = benchmark(_scan, cls, pieces)
    assert n == expect_events and not s.truncated
    size = sum(map(len, pieces))
    benchmark.extra_info["bytes"] = size
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["MB_per_s"] = round(size / stats.stats.mean / 1e6, 1)
    return s


@pytest.mark.benchmark(group="sse-chat-200ev-1KiB-pieces")
@pytest.mark.parametrize("cls", TWINS)
def test_sse_chat_1k_pieces(benchmark, cls):
    s = _run(benchmark, cls, _split(CHAT, KIB), 200)
    assert s.done and s.last_data == _USAGE


@pytest.mark.benchmark(group="sse-chat-200ev-crlf-1KiB-pieces")
@pytest.mark.parametrize("cls", TWINS)
def test_sse_chat_crlf_1k_pieces(benchmark, cls):
    _run(benchmark, cls, _split(CHAT_CRLF, KIB), 200)


@pytest.mark.benchmark(group="sse-data-only-one-event-per-piece")
@pytest.mark.parametrize("cls", TWINS)
def test_sse_data_only_event_per_piece(benchmark, cls):
    # The common case upstreams produce: each write is exactly one `data: {...}\n\n`.
    _run(benchmark, cls, CHAT_EVENTS, 200)


@pytest.mark.benchmark(group="sse-data-only-whole-stream")
@pytest.mark.parametrize("cls", TWINS)
def test_sse_data_only_whole_stream(benchmark, cls):
    _run(benchmark, cls, [CHAT], 200)


@pytest.mark.benchmark(group="sse-1MiB-event-1KiB-pieces")
@pytest.mark.parametrize("cls", TWINS)
def test_sse_big_event_1k_pieces(benchmark, cls):
    _run(benchmark, cls, _split(BIG_EVENT, KIB), 1)
