"""The mock worker over real loopback sockets: SDK clients, raw HTTP/1.1, failure modes.

Every test runs its coroutine under ``asyncio.run`` with a hard timeout (pytest-asyncio
is not used), and every client call carries its own timeout.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time

import orjson
import pytest

from smg.http1.events import Data, EndOfMessage, Response
from smg.http1.parser import ResponseParser
from smg.testing.mock_worker import MockConfig, MockWorker, start_mock_workers
from tests.helpers import wait_for_async

openai = pytest.importorskip("openai")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hello"}]}


def run(coro, timeout: float = 20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def with_worker(test, timeout: float = 20.0, **config):
    """Runs ``test(worker)`` against a fresh worker on 127.0.0.1."""

    async def main():
        worker = await MockWorker(MockConfig(**config)).start()
        try:
            return await test(worker)
        finally:
            await worker.stop()

    return run(main(), timeout)


def oai(worker: MockWorker, timeout: float = 5.0):
    return openai.AsyncOpenAI(base_url=worker.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)


def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def post(path: str, obj, headers: dict | None = None) -> bytes:
    return request("POST", path, orjson.dumps(obj), headers)


class Reply:
    def __init__(self, head: Response, body: bytes) -> None:
        self.status = head.status_code
        self.headers = {k.decode(): v.decode() for k, v in head.headers}
        self.chunked = head.chunked
        self.body = body

    def json(self):
        return orjson.loads(self.body)

    def sse(self) -> list:
        return [line[6:] for line in self.body.decode().split("\n") if line.startswith("data: ")]


async def read_replies(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> list:
    """Reads ``n`` complete responses (raises on EOF or a timeout first)."""
    parser = ResponseParser()
    replies: list = []
    head = None
    body: list = []
    deadline = time.monotonic() + timeout
    while len(replies) < n:
        data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
        if not data:
            raise ConnectionError(f"EOF after {len(replies)} replies")
        for ev in parser.feed(data):
            if isinstance(ev, Response):
                head, body = ev, []
            elif isinstance(ev, Data):
                body.append(ev.data)
            elif isinstance(ev, EndOfMessage):
                replies.append(Reply(head, b"".join(body)))
    return replies


async def exchange(worker: MockWorker, raw: bytes, n: int = 1) -> list:
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    try:
        writer.write(raw)
        return await read_replies(reader, n)
    finally:
        writer.close()


# --------------------------------------------------------------------------- SDK clients


def test_openai_chat_non_stream():
    async def t(w):
        async with oai(w) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="some-model", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": "rid-1"})
            r = raw.parse()
        assert raw.headers["x-mock-worker"] == w.config.worker_id == f"mock-{w.port}"
        assert raw.headers["x-request-id"] == "rid-1"
        assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
        assert r.model == "some-model"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == "Hello from the smg"
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == 4 and r.usage.total_tokens == r.usage.prompt_tokens + 4
        assert w.stats.last_body["messages"][0]["content"] == "hi"
        assert w.stats.last_headers["x-request-id"] == "rid-1"
        assert w.stats.paths == {"/v1/chat/completions": 1}

    with_worker(t, num_chunks=4)


def test_openai_ids_are_unique():
    async def t(w):
        async with oai(w) as c:
            ids = {(await c.chat.completions.create(**CHAT)).id for _ in range(5)}
        assert len(ids) == 5

    with_worker(t)


def test_openai_chat_stream_with_usage():
    async def t(w):
        async with oai(w) as c:
            stream = await c.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
            chunks = [ch async for ch in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "Hello from the smg mock worker"
        finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
        assert finishes[-1] == "stop" and finishes.count("stop") == 1
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
        assert {ch.id for ch in chunks} == {chunks[0].id}
        assert all(ch.object == "chat.completion.chunk" and ch.model == "mock-model" for ch in chunks)
        assert w.stats.completed_streams == 1 and w.stats.cancelled == 0

    with_worker(t, num_chunks=6)


def test_raw_stream_is_chunked_sse_ending_in_done():
    async def t(w):
        [r] = await exchange(w, post("/v1/chat/completions", {**CHAT, "stream": True}))
        assert r.status == 200 and r.chunked
        assert r.headers["content-type"] == "text/event-stream"
        data = r.sse()
        assert data[-1] == "[DONE]" and len(data) == 1 + 3 + 1 + 1  # role, tokens, finish, done
        assert all("usage" not in orjson.loads(d) for d in data[:-1])

    with_worker(t, num_chunks=3)


def test_openai_completions():
    async def t(w):
        async with oai(w) as c:
            r = await c.completions.create(model="m", prompt="say hi")
            assert r.object == "text_completion" and r.choices[0].text == "Hello from the"
            assert r.usage.completion_tokens == 3
            stream = await c.completions.create(model="m", prompt="say hi", stream=True)
            parts = [ch.choices[0].text async for ch in stream]
        assert "".join(parts) == "Hello from the"

    with_worker(t, num_chunks=3)


def test_openai_embeddings_float_and_base64():
    async def t(w):
        async with oai(w) as c:
            b64 = await c.embeddings.create(model="emb", input=["a", "b"])  # SDK default: base64
            flt = await c.embeddings.create(model="emb", input=["a", "b"], encoding_format="float")
            one = await c.embeddings.create(model="emb", input="a", encoding_format="float")
        assert [len(d.embedding) for d in flt.data] == [5, 5]
        for x, y in zip(b64.data[0].embedding, flt.data[0].embedding):
            assert abs(x - y) < 1e-6
        assert one.data[0].embedding == flt.data[0].embedding  # deterministic per input
        assert flt.data[0].embedding != flt.data[1].embedding
        assert abs(sum(v * v for v in flt.data[0].embedding) - 1.0) < 1e-6
        assert flt.model == "emb" and flt.usage.prompt_tokens > 0

    with_worker(t, embedding_dim=5)


def test_openai_models():
    async def t(w):
        async with oai(w) as c:
            page = await c.models.list()
        assert [m.id for m in page.data] == ["served-x"]
        assert page.data[0].owned_by == "mock"

    with_worker(t, model="served-x")


def test_anthropic_messages():
    anthropic = pytest.importorskip("anthropic")

    async def t(w):
        client = anthropic.AsyncAnthropic(base_url=w.url, api_key="unused", max_retries=0, timeout=5)
        try:
            m = await client.messages.create(model="claude-x", max_tokens=16,
                                             messages=[{"role": "user", "content": "hi"}])
            assert m.type == "message" and m.id.startswith("msg_") and m.model == "claude-x"
            assert m.content[0].text == "Hello from the" and m.stop_reason == "end_turn"
            assert m.usage.output_tokens == 3
            async with client.messages.stream(model="claude-x", max_tokens=16,
                                              messages=[{"role": "user", "content": "hi"}]) as s:
                text = await s.get_final_text()
            assert text == "Hello from the"
        finally:
            await client.close()
        [r] = await exchange(w, post("/v1/messages", {"model": "c", "stream": True, "messages": []}))
        events = re.findall(r"^event: (\w+)$", r.body.decode(), re.M)
        assert events == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
            "content_block_stop", "message_delta", "message_stop"]

    with_worker(t, num_chunks=3)


# --------------------------------------------------------------------------- other endpoints


def test_generate_native():
    async def t(w):
        r1, r2, r3 = await exchange(w, post("/generate", {"text": "x"})
                                    + post("/generate", {"text": "x", "stream": True})
                                    + post("/generate", {"text": ["a", "b"]}), 3)
        g = r1.json()
        assert g["text"] == "Hello from the"
        assert g["meta_info"]["finish_reason"] == {"type": "stop"}
        assert g["meta_info"]["completion_tokens"] == 3 and g["meta_info"]["prompt_tokens"] >= 1
        frames = r2.sse()
        assert frames[-1] == "[DONE]"
        texts = [orjson.loads(f)["text"] for f in frames[:-1]]
        assert texts == ["Hello", "Hello from", "Hello from the"]  # cumulative
        assert orjson.loads(frames[-2])["meta_info"]["finish_reason"] == {"type": "stop"}
        assert [x["text"] for x in r3.json()] == ["Hello from the"] * 2

    with_worker(t, num_chunks=3)


def test_info_endpoints():
    async def t(w):
        paths = ["/health", "/health_generate", "/liveness", "/get_model_info", "/get_server_info",
                 "/server_info", "/version", "/v1/loads?include=core", "/metrics", "/readiness"]
        replies = await exchange(w, b"".join(request("GET", p) for p in paths), len(paths))
        assert [r.status for r in replies] == [200] * len(paths)
        assert all(r.headers["x-mock-worker"] == "w1" for r in replies)
        info = replies[3].json()
        assert info["model_path"] == "m1" and info["tokenizer_path"] == "m1" and info["is_generation"] is True
        assert replies[4].json()["model_path"] == "m1" == replies[5].json()["model_path"]
        assert "version" in replies[6].json()
        loads = replies[7].json()
        assert loads["dp_rank_count"] == 1 and loads["loads"][0]["num_running_reqs"] == 0
        assert b"sglang:num_running_reqs" in replies[8].body
        assert w.stats.paths["/v1/loads"] == 1

    with_worker(t, model="m1", worker_id="w1")


def test_rerank():
    async def t(w):
        body = {"query": "q", "documents": ["a", "b", "c"], "top_n": 2}
        r1, r2 = await exchange(w, post("/v1/rerank", body) + post("/rerank", body), 2)
        out = r1.json()
        assert len(out) == 2 and out[0]["score"] >= out[1]["score"]
        assert {"index", "score", "document"} <= set(out[0])
        assert r2.json() == [{**x, "meta_info": y["meta_info"]} for x, y in zip(out, r2.json())]

    with_worker(t)


def test_errors_bad_json_404_405_and_parse_error():
    async def t(w):
        bad = request("POST", "/v1/chat/completions", b"{nope")
        r1, r2, r3, r4 = await exchange(w, bad + request("GET", "/nope") + request("GET", "/v1/chat/completions")
                                        + post("/v1/chat/completions", [1, 2]), 4)
        assert r1.status == 400 and r1.json()["error"]["type"] == "invalid_request_error"
        assert r2.status == 404 and "error" in r2.json()
        assert r3.status == 405 and r3.headers["allow"] == "POST"
        assert r4.status == 400
        assert all(r.headers["x-mock-worker"] for r in (r1, r2, r3, r4))
        # Malformed HTTP: the parser's status, then the connection closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(b"GARBAGE\r\n\r\n")
        [r] = await read_replies(reader, 1)
        assert r.status == 400 and r.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()

    with_worker(t)


# --------------------------------------------------------------------------- connections


def test_pipelined_requests_answered_in_order():
    async def t(w):
        # The second request is slow (a stream with a ttft), the others are canned: the
        # answers must still come back in request order.
        w.config.ttft = 0.05
        raw = b"".join([
            post("/v1/chat/completions", CHAT, {"x-request-id": "r0"}),
            post("/v1/chat/completions", {**CHAT, "stream": True}, {"x-request-id": "r1"}),
            request("GET", "/health", headers={"x-request-id": "r2"}),
            post("/v1/completions", {"prompt": "x"}, {"x-request-id": "r3"}),
            request("GET", "/v1/models", headers={"x-request-id": "r4"}),
        ])
        replies = await exchange(w, raw, 5)
        assert [r.headers["x-request-id"] for r in replies] == ["r0", "r1", "r2", "r3", "r4"]
        assert replies[1].sse()[-1] == "[DONE]"
        assert replies[3].json()["object"] == "text_completion"
        assert w.stats.total_connections == 1

    with_worker(t)


def test_pipelined_canned_burst():
    async def t(w):
        n = 200
        replies = await exchange(w, b"".join(post("/v1/chat/completions", CHAT, {"x-request-id": str(i)})
                                             for i in range(n)), n)
        assert [r.headers["x-request-id"] for r in replies] == [str(i) for i in range(n)]
        assert len({r.json()["id"] for r in replies}) == n
        assert w.stats.requests == n

    with_worker(t)


def test_keep_alive_reuse_and_connection_close():
    async def t(w):
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        for _ in range(3):
            writer.write(post("/v1/chat/completions", CHAT))
            [r] = await read_replies(reader, 1)
            assert r.status == 200 and "connection" not in r.headers
        writer.write(request("GET", "/health", headers={"Connection": "close"}))
        [r] = await read_replies(reader, 1)
        assert r.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert w.stats.total_connections == 1 and w.stats.requests == 4
        # HTTP/1.0: answered, then closed.
        [r] = await exchange(w, request("GET", "/health", version="1.0"))
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await wait_for_async(lambda: w.stats.open_connections == 0)

    with_worker(t)


def test_expect_100_continue():
    async def t(w):
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        body = orjson.dumps(CHAT)
        writer.write(request("POST", "/v1/chat/completions", None,
                             {"Expect": "100-continue", "Content-Type": "application/json",
                              "Content-Length": str(len(body))}))
        line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert line.startswith(b"HTTP/1.1 100 ")
        writer.write(body)
        [r] = await read_replies(reader, 1)
        assert r.status == 200
        writer.close()

    with_worker(t)


def test_backpressure_long_stream_to_slow_reader():
    async def t(w):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", w.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(post("/v1/completions", {"prompt": "x", "stream": True}))
        await asyncio.sleep(0.3)  # don't read: the worker's transport must push back
        assert w.stats.completed_streams == 0
        [r] = await read_replies(reader, 1, timeout=15)
        frames = r.sse()
        assert frames[-1] == "[DONE]" and len(frames) == 20000 + 2
        assert w.stats.completed_streams == 1
        writer.close()

    with_worker(t, timeout=30, num_chunks=20000)


# --------------------------------------------------------------------------- failure modes


def test_fail_status_and_rate():
    async def t(w):
        async with oai(w) as c:
            with pytest.raises(openai.APIStatusError) as ei:
                await c.chat.completions.create(**CHAT)
            assert ei.value.status_code == 503
            assert ei.value.body["type"] == "server_error"
            w.config.fail_rate = 0.0
            assert (await c.chat.completions.create(**CHAT)).choices
        # health is not an inference endpoint: unaffected
        [r] = await exchange(w, request("GET", "/health"))
        assert r.status == 200
        # Anthropic-shaped error on /v1/messages
        w.config.fail_rate = 1.0
        [r] = await exchange(w, post("/v1/messages", {"model": "c", "messages": []}))
        assert r.status == 503 and r.json()["type"] == "error"
        assert w.stats.failures == 2

    with_worker(t, fail_status=503)


def test_fail_rate_is_a_probability():
    async def t(w):
        n = 200
        replies = await exchange(w, b"".join(post("/v1/chat/completions", CHAT) for _ in range(n)), n)
        failed = sum(r.status == 500 for r in replies)
        assert 40 < failed < 160  # p=0.5, n=200: far outside 6 sigma otherwise
        assert w.stats.failures == failed

    with_worker(t, fail_mode="status", fail_rate=0.5)


def test_fail_reset():
    async def t(w):
        async with oai(w) as c:
            with pytest.raises(openai.APIConnectionError):
                await c.chat.completions.create(**CHAT)
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(post("/v1/chat/completions", CHAT))
        with pytest.raises((ConnectionError, OSError)):
            await read_replies(reader, 1)
        writer.close()

    with_worker(t, fail_mode="reset")


def test_fail_cut_mid_stream():
    async def t(w):
        async with oai(w) as c:
            got = []
            with pytest.raises(openai.APIError):
                stream = await c.chat.completions.create(**CHAT, stream=True)
                async for ch in stream:
                    got.append(ch)
            assert len(got) == 3  # role chunk + 2 tokens, then the connection dies
            # raw view: the chunked body never terminates
            reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
            writer.write(post("/v1/chat/completions", {**CHAT, "stream": True}))
            data = b""
            while True:
                part = await asyncio.wait_for(reader.read(65536), 2)
                if not part:
                    break
                data += part
            writer.close()
            assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"data: ") == 3
            assert not data.endswith(b"0\r\n\r\n")
            # a non-streaming request gets half a body
            with pytest.raises(openai.APIConnectionError):
                await c.chat.completions.create(**CHAT)
        assert w.stats.cancelled == 0 and w.stats.completed_streams == 0

    with_worker(t, fail_mode="cut", cut_after_chunks=3)


def test_fail_hang_client_times_out():
    async def t(w):
        async with oai(w, timeout=0.3) as c:
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(**CHAT)
        assert await wait_for_async(lambda: w.stats.aborted == 1)
        w.config.fail_mode = None  # steer it back: answers again
        [r] = await exchange(w, post("/v1/chat/completions", CHAT))
        assert r.status == 200

    with_worker(t, fail_mode="hang")


def test_cancelled_stream_counted():
    async def t(w):
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(post("/v1/chat/completions", {**CHAT, "stream": True}))
        data = b""
        while data.count(b"data: ") < 3:
            data += await asyncio.wait_for(reader.read(4096), 2)
        writer.close()  # hang up mid-stream
        assert await wait_for_async(lambda: w.stats.cancelled == 1)
        assert w.stats.completed_streams == 0
        assert await wait_for_async(lambda: w.stats.open_connections == 0)
        # the SDK's view: breaking out of the stream and closing it is a cancel too
        async with oai(w) as c:
            stream = await c.chat.completions.create(**CHAT, stream=True)
            async for _ in stream:
                break
            await stream.close()
        assert await wait_for_async(lambda: w.stats.cancelled == 2)

    with_worker(t, num_chunks=100, token_delay=0.02)


def test_ttft_and_token_delay_hold_the_answer():
    # Behaviour, not timing (timing belongs in bench/): the delays are long enough that
    # "not sent yet" is unambiguous, then short ones show the answer still completes.
    async def t(w):
        async def running() -> int:
            [r] = await exchange(w, request("GET", "/v1/loads"))
            return r.json()["loads"][0]["num_running_reqs"]

        async def open_stream():
            reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
            writer.write(post("/v1/chat/completions", {**CHAT, "stream": True}))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            return reader, writer

        # ttft: the head goes out, the stream is in flight, no event is sent before it
        w.config.update({"ttft": 60.0, "token_delay": 0.0})
        reader, writer = await open_stream()
        assert await running() == 1 and w.stats.completed_streams == 0
        writer.close()
        assert await wait_for_async(lambda: w.stats.cancelled == 1)

        # token_delay: the role event and the first token go out, the second token waits
        w.config.update({"ttft": 0.0, "token_delay": 60.0})
        reader, writer = await open_stream()
        data = b""
        while data.count(b"data: ") < 2:
            data += await asyncio.wait_for(reader.read(4096), 5)
        assert data.count(b"data: ") == 2 and b'"content":"Hello"' in data
        assert await running() == 1 and w.stats.completed_streams == 0
        writer.close()
        assert await wait_for_async(lambda: w.stats.cancelled == 2)

        # non-streaming: held for ttft + num_chunks * token_delay (here token_delay only)
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(post("/v1/chat/completions", CHAT))
        assert await wait_for_async(lambda: w.stats.paths.get("/v1/chat/completions") == 3)
        assert await running() == 1
        writer.close()
        assert await wait_for_async(lambda: w.stats.aborted == 1)
        assert await running() == 0

        # short delays: every token arrives and the stream counts as completed
        w.config.update({"ttft": 0.02, "token_delay": 0.005})
        async with oai(w) as c:
            stream = await c.chat.completions.create(**CHAT, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            r = await c.chat.completions.create(**CHAT)
        assert text == r.choices[0].message.content == "Hello from the smg"
        assert w.stats.completed_streams == 1 and w.stats.cancelled == 2

    with_worker(t, num_chunks=4)


# --------------------------------------------------------------------------- admin and lifecycle


def test_mock_admin_endpoints():
    async def t(w):
        r1, r2 = await exchange(w, post("/_mock/config", {"fail_status": 429, "num_chunks": 2})
                                + post("/v1/chat/completions", CHAT), 2)
        assert r1.status == 200 and r1.json()["fail_status"] == 429
        assert r2.status == 429 and r2.json()["error"]["type"] == "rate_limit_error"
        assert w.config.fail_status == 429
        r3, r4, r5 = await exchange(w, post("/_mock/config", {"fail_status": None})
                                    + post("/v1/chat/completions", CHAT)
                                    + request("GET", "/_mock/stats"), 3)
        assert r4.json()["choices"][0]["message"]["content"] == "Hello from"  # num_chunks applied
        stats = r5.json()
        assert stats["requests"] == 2 and stats["paths"] == {"/v1/chat/completions": 2}  # /_mock/* not counted
        assert stats["failures"] == 1 and stats["last_body"] == CHAT
        assert stats["last_headers"]["content-type"] == "application/json"
        bad1, bad2, cfg, _reset, after = await exchange(
            w, post("/_mock/config", {"nope": 1}) + post("/_mock/config", {"fail_rate": 3})
            + request("GET", "/_mock/config") + post("/_mock/reset", {}) + request("GET", "/_mock/stats"), 5)
        assert bad1.status == 400 and bad2.status == 400
        assert cfg.json()["num_chunks"] == 2 and cfg.json()["fail_rate"] == 1.0
        assert after.json()["requests"] == 0

    with_worker(t)


def test_config_validation():
    cfg = MockConfig()
    with pytest.raises(ValueError):
        cfg.update({"fail_mode": "explode"})
    with pytest.raises(ValueError):
        cfg.update({"ttft": -1})
    with pytest.raises(ValueError):
        cfg.update({"num_chunks": True})
    cfg.update({"fail_mode": "cut", "ttft": 1})
    assert cfg.fail_mode == "cut" and cfg.ttft == 1.0


def test_stop_closes_hung_connections_and_start_many():
    async def main():
        workers = await start_mock_workers(2, fail_mode="hang")
        assert len({w.port for w in workers}) == 2
        w = workers[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(post("/v1/chat/completions", CHAT))
        assert await wait_for_async(lambda: w.stats.requests == 1)
        for x in workers:
            await x.stop()
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", w.port)

    run(main())


def test_runs_on_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        async with MockWorker() as w:
            async with oai(w) as c:
                r = await c.chat.completions.create(**CHAT)
                stream = await c.chat.completions.create(**CHAT, stream=True)
                n = len([ch async for ch in stream])
        return r, n

    r, n = uvloop.run(asyncio.wait_for(main(), 20))
    assert r.choices[0].finish_reason == "stop" and n == 10


def test_cli_module_entry_point():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "smg.testing.mock_worker", "--port", "0", "--model", "cli-m",
                             "--num-chunks", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        line = b""
        deadline = time.monotonic() + 15
        while b"listening on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        m = re.search(rb"http://127\.0\.0\.1:(\d+)", line)
        assert m, line

        async def probe():
            w = MockWorker()
            w.port = int(m.group(1))
            [r] = await exchange(w, post("/v1/chat/completions", CHAT))
            return r

        r = run(probe(), 10)
        assert r.json()["choices"][0]["message"]["content"] == "Hello from"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0


def test_engine_control_routes_answer_as_sglang_and_fail_on_demand():
    async def t(w):
        raw = (request("POST", "/flush_cache") + post("/start_profile", {"num_steps": 2})
               + request("POST", "/stop_profile"))
        replies = await exchange(w, raw, 3)
        assert [r.status for r in replies] == [200, 200, 200]
        assert replies[0].body.startswith(b"Cache flushed.") and replies[1].body == b"Start profiling.\n"
        assert replies[2].headers["content-type"] == "text/plain"
        assert w.stats.last_body is None  # the last one (stop) had no body
        w.config.admin_status = 503
        (r,) = await exchange(w, post("/start_profile", {"num_steps": 2}))
        assert r.status == 503 and w.stats.last_body == {"num_steps": 2}

    with_worker(t)


def test_classify_count_tokens_get_load_and_typed_metrics():
    async def t(w):
        raw = (post("/v1/classify", {"model": "m", "input": ["a", "b"]}) + post("/v1/classify", {"input": 3})
               + post("/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
               + request("GET", "/get_load") + request("GET", "/metrics"))
        c1, c2, n, gl, m = await exchange(w, raw, 5)
        d = c1.json()
        assert c1.status == 200 and d["object"] == "list" and [x["index"] for x in d["data"]] == [0, 1]
        assert all(x["num_classes"] == 3 and abs(sum(x["probs"]) - 1) < 1e-9 for x in d["data"])
        assert d["data"][0]["label"] in ("LABEL_0", "LABEL_1", "LABEL_2")
        again = (await exchange(w, post("/v1/classify", {"model": "m", "input": ["a", "b"]})))[0].json()
        assert again["data"] == d["data"]  # deterministic in the input
        assert c2.status == 400
        assert n.status == 200 and n.json()["input_tokens"] > 0
        assert gl.json() == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
        assert b"# TYPE sglang:num_running_reqs gauge" in m.body and b"# HELP vllm:num_requests_running" in m.body

    with_worker(t, num_labels=3)
