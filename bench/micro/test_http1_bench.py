"""Micro-benchmarks of the HTTP/1.1 parsers, native (c) vs pure-Python twin (py).

Workloads (what the gateway's two sides see):
- ``chat_post``: one ~1 KB OpenAI chat-completions POST (an SDK's real header set plus a
  JSON body) arriving in one read, on a keep-alive connection (one parser, reused).
- ``pipelined_20``: 20 small pipelined GETs arriving in one read.
- ``sse_response``: an upstream worker's streamed answer: a chunked text/event-stream
  response of 100 chat.completion.chunk events (~17 KB), fed in 1 KiB reads.

Run: ``python -m pytest bench/micro/test_http1_bench.py --benchmark-only``.
Each test also checks the events, so a benchmark cannot pass on a broken parser; timing
never decides pass/fail.
"""

from __future__ import annotations

import pytest

from smg.http1.events import Data, EndOfMessage, Request, Response
from smg.http1.parser import (
    RequestParserC,
    RequestParserPy,
    ResponseParserC,
    ResponseParserPy,
)
from smg.testing.twins import twin_params

from tests.native.http1_corpus import REALISTIC_BODY as CHAT_BODY  # noqa: E402
from tests.native.http1_corpus import REALISTIC_POST as CHAT_POST  # noqa: E402
assert 900 <= len(CHAT_POST) <= 1200

PIPELINED_20 = b"".join(
    b"GET /v1/models/%d HTTP/1.1\r\nHost: gateway.internal\r\nUser-Agent: bench\r\n"
    b"Accept: */*\r\n\r\n" % i
    for i in range(20)
)

SSE_EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,'
    b'"model":"llama","choices":[{"index":0,"delta":{"content":"token"},"finish_reason":null}]}\n\n'
)
SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(SSE_EVENT), SSE_EVENT) for _ in range(100))
    + b"0\r\n\r\n"
)
SSE_READS = [SSE_RESPONSE[i : i + 1024] for i in range(0, len(SSE_RESPONSE), 1024)]

REQUEST_TWINS = twin_params(RequestParserPy, RequestParserC)
RESPONSE_TWINS = twin_params(ResponseParserPy, ResponseParserC)


@pytest.mark.parametrize("cls", REQUEST_TWINS)
def test_chat_post(benchmark, cls):
    benchmark.group = "http1: ~1 KB chat POST, one read"
    p = cls()
    events = benchmark(p.feed, CHAT_POST)
    assert [type(e) for e in events] == [Request, Data, EndOfMessage]
    assert events[1].data == CHAT_BODY


@pytest.mark.parametrize("cls", REQUEST_TWINS)
def test_pipelined_20(benchmark, cls):
    benchmark.group = "http1: 20 pipelined GETs, one read"
    p = cls()
    events = benchmark(p.feed, PIPELINED_20)
    assert len(events) == 40 and events[-2].target == b"/v1/models/19"


@pytest.mark.parametrize("cls", RESPONSE_TWINS)
def test_sse_response(benchmark, cls):
    benchmark.group = "http1: chunked SSE response, 100 events, 1 KiB reads"
    p = cls()

    def parse() -> list:
        events: list = []
        for piece in SSE_READS:
            events.extend(p.feed(piece))
        return events

    events = benchmark(parse)
    assert type(events[0]) is Response and type(events[-1]) is EndOfMessage
    assert b"".join(e.data for e in events if type(e) is Data) == SSE_EVENT * 100
