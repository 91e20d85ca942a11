"""A test-local worker that records what reaches it and answers as a script says.

Used by the forwarding, request-caused-error and stream-end tests (and by hand against
any gateway: ``python tests/integration/recording_worker.py --port N``). It speaks
HTTP/1.1 through h11, answers the registration probes (``/health``, ``/v1/models``,
``/server_info``, ``/model_info``; any other GET gets 404) itself, and hands every
other request to ``script(request) -> Answer``. Every request that reaches the script is appended to
``requests`` (method, path, header pairs with lower-case names in arrival order, body).

Answers:
- ``Answer(status, body, headers)``: a complete answer with Content-Length;
  ``Answer(0)`` drops the connection without answering;
- ``Answer(200, chunks=[...], end="done" | "eof" | "cut")``: a chunked SSE answer whose
  ``chunks`` are sent as they are; ``end="done"`` then sends ``data: [DONE]``, ``"eof"``
  ends the chunked body without it, ``"cut"`` closes the connection without the last
  chunk.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import threading
import time

import h11

MODEL = "mock-model"
#: The Rust SMG, the oracle some tests compare with when it is installed.
RUST = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "bench", ".venvs", "smg-rust",
                                     "bin", "smg"))


@dataclasses.dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: tuple = ()
    chunks: tuple | None = None
    end: str = "done"
    after_done: bytes = b""   # bytes a misbehaving worker sends after [DONE]


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    headers: list
    body: bytes

    def header(self, name: str):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def names(self) -> list:
        return [n for n, _ in self.headers]


def chat_answer(text: str = "hello", worker: str = "") -> Answer:
    body = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    hdrs = (("content-type", "application/json"),) + ((("x-worker", worker),) if worker else ())
    return Answer(200, json.dumps(body).encode(), hdrs)


def sse_chunk(content: str, finish: str | None = None) -> bytes:
    ev = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
          "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return b"data: " + json.dumps(ev).encode() + b"\n\n"


def ok_script(req: Seen) -> Answer:
    return chat_answer()


class _Conn(asyncio.Protocol):
    def __init__(self, worker: "RecordingWorker") -> None:
        self.worker = worker
        self.h11 = h11.Connection(h11.SERVER)
        self.transport = None
        self.req = None
        self.body = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
            while True:
                ev = self.h11.next_event()
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    break
                if isinstance(ev, h11.Request):
                    self.req = ev
                    self.body = bytearray()
                elif isinstance(ev, h11.Data):
                    self.body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    asyncio.get_running_loop().create_task(self._answer())
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError:
            self.transport.close()

    def _send(self, ev) -> None:
        data = self.h11.send(ev)
        if data:
            self.transport.write(data)

    async def _answer(self) -> None:
        req = self.req
        seen = Seen(req.method.decode(), req.target.decode(),
                    [(n.decode().lower(), v.decode("latin-1")) for n, v in req.headers], bytes(self.body))
        try:
            ans = self.worker.answer(seen)
        except Exception as e:  # a script's bug is the test's failure, visible in the answer
            ans = Answer(599, f"script failed on {seen.method} {seen.path} {seen.body[:100]!r}: {e!r}".encode())
        if self.worker.delay:
            await asyncio.sleep(self.worker.delay)
        if self.transport.is_closing():
            return
        if ans.status == 0:          # a worker that drops the connection without answering
            self.transport.abort()
            return
        hdrs = [(k.encode(), v.encode()) for k, v in ans.headers]
        if ans.chunks is None:
            hdrs.append((b"content-length", str(len(ans.body)).encode()))
            self._send(h11.Response(status_code=ans.status, headers=hdrs))
            self._send(h11.Data(data=ans.body))
            self._send(h11.EndOfMessage())
        else:
            hdrs += [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]
            self._send(h11.Response(status_code=ans.status, headers=hdrs))
            for c in ans.chunks:
                self._send(h11.Data(data=c))
                await asyncio.sleep(0)
            if ans.end == "cut":
                self.transport.close()
                return
            if ans.end == "done":
                self._send(h11.Data(data=b"data: [DONE]\n\n"))
                if ans.after_done:
                    self._send(h11.Data(data=ans.after_done))
            self._send(h11.EndOfMessage())
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            if self.h11.trailing_data[0]:
                self.data_received(b"")
        else:
            self.transport.close()


class RecordingWorker:
    """``RecordingWorker(script).start(host, port)`` on the running loop; ``url``, ``requests``."""

    def __init__(self, script=ok_script, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.requests: list = []
        self.server = None
        self.lock = threading.Lock()

    def answer(self, seen: Seen) -> Answer:
        p = seen.path.split("?")[0]
        if seen.method == "GET" and p in ("/health", "/health_generate", "/liveness", "/readiness"):
            return Answer(200, b"{}", (("content-type", "application/json"),))
        if seen.method == "GET" and p == "/v1/models":
            body = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "sglang"}]}
            return Answer(200, json.dumps(body).encode(), (("content-type", "application/json"),))
        if seen.method == "GET" and p in ("/server_info", "/get_server_info", "/model_info", "/get_model_info",
                                          "/v1/loads", "/metrics", "/version", "/loads"):
            if p in ("/v1/loads", "/metrics", "/version", "/loads"):
                return Answer(404, b"not found")
            return Answer(200, json.dumps({"model_path": MODEL, "served_model_name": MODEL}).encode(),
                          (("content-type", "application/json"),))
        if seen.method == "GET":   # any other gateway probe (load polls, ...): not the script's
            return Answer(404, b"not found")
        with self.lock:
            self.requests.append(seen)
        return self.script(seen)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "RecordingWorker":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), host, port)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.close()

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rust_gateway(urls: list, *extra: str):
    """Starts the Rust SMG in front of ``urls``; returns (process, port) once ready
    (the caller terminates the process)."""
    import httpx
    import pytest

    port, mport = _free_port(), _free_port()
    p = subprocess.Popen([RUST, "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls,
                          "--prometheus-port", str(mport), *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readiness", timeout=1).status_code == 200:
                return p, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    p.kill()
    p.wait(5)
    pytest.fail("the Rust SMG did not become ready")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--log", help="append one JSON line per request here")
    a = ap.parse_args()

    def script(req: Seen) -> Answer:
        if a.log:
            with open(a.log, "a") as f:
                f.write(json.dumps({"method": req.method, "path": req.path, "headers": req.headers,
                                    "body": req.body.decode("utf-8", "replace")}) + "\n")
        if a.status != 200:
            return Answer(a.status, b'{"error":{"message":"scripted failure"}}',
                          (("content-type", "application/json"),))
        return chat_answer()

    async def main() -> None:
        await RecordingWorker(script).start("127.0.0.1", a.port)
        await asyncio.Event().wait()

    asyncio.run(main())


class Fleet:
    """``with Fleet([script, ...]) as f:`` recording workers on their own loop thread;
    ``f.workers``, ``f.urls``; ``f.gateway(**settings)`` a started GatewayHarness in
    front of them (waited until they are ready)."""

    def __init__(self, scripts, delay: float = 0.0) -> None:
        self.scripts = list(scripts)
        self.delay = delay
        self.workers: list = []
        self.lt = None
        self.harnesses: list = []

    def __enter__(self) -> "Fleet":
        from smg.testing.harness import LoopThread

        self.lt = LoopThread()
        for s in self.scripts:
            self.workers.append(self.lt.run(RecordingWorker(s, self.delay).start("127.0.0.1", 0), 10))
        return self

    @property
    def urls(self) -> list:
        return [w.url for w in self.workers]

    def gateway(self, **settings):
        from smg.testing.harness import GatewayHarness

        h = GatewayHarness(workers=[], extra_worker_urls=tuple(self.urls), **settings).__enter__()
        self.harnesses.append(h)
        h.run(h.gw.wait_ready(10), 15)
        return h

    def clear(self) -> None:
        for w in self.workers:
            w.clear()

    def counts(self) -> list:
        return [len(w.requests) for w in self.workers]

    def __exit__(self, *exc) -> None:
        for h in self.harnesses:
            h.__exit__(None, None, None)
        for w in self.workers:
            self.lt.run(w.stop(), 10)
        self.lt.stop()
