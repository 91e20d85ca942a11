"""Drives the gateway's real request path with in-memory transports (no sockets, no
event-loop turns): client bytes → HTTPServerProtocol → filters → selection → Exchange →
Http1Leg → worker connection → response bytes → client. Used by bench/micro to time the Python side of
one proxied request, deterministic enough to compare variants (observability on/off).
"""
from __future__ import annotations

import io

import uvloop

from smg.config.load import build_config
from smg.observability.logs import AccessLog
from smg.server.app import Gateway
from smg.server.protocol import HTTPServerProtocol
from smg.upstream.connection import UpstreamConnection
from smg.upstream.pool import UpstreamPool
from smg.workers.worker import READY, Worker

_CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hello"}]}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nuser-agent: OpenAI/Python 1.54\r\n"
           b"content-type: application/json\r\nauthorization: Bearer sk-1\r\ncontent-length: %d\r\n\r\n%s"
           % (len(_CHAT), _CHAT))
_BODY = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"mock-model","choices":[{"index":0,'
         b'"message":{"role":"assistant","content":"Hello from the smg mock worker."},"finish_reason":"stop"}],'
         b'"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}')
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-mock-worker: w1\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


def _sse_response(n: int = 8) -> bytes:
    chunk = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock-model",'
             b'"choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n')
    usage = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock-model",'
             b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}\n\n')
    events = [chunk] * n + [usage, b"data: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + body)


STREAM_RESPONSE = _sse_response()


class MemoryTransport:
    """The transport methods the protocols call; writes are kept in ``out``."""

    def __init__(self) -> None:
        self.out: list = []
        self.closing = False

    def write(self, data) -> None:
        self.out.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def one_stream(self) -> None:
        """One proxied streamed request: 10 SSE events, then [DONE]."""
        self.one(STREAM_RESPONSE)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name, default=None):
        return default


class PathBench:
    """One gateway, one worker with one pooled connection, one client connection."""

    def __init__(self, metrics: bool, access_log: bool, **settings) -> None:
        self.loop = uvloop.new_event_loop()
        cfg = build_config(dict({"policy": "round_robin", "disable_metrics": not metrics,
                                 "disable_health_check": True, "disable_load_monitoring": True}, **settings))
        self.log = io.BytesIO()
        gw = self.gw = Gateway(cfg, access_log=AccessLog(self.log, False) if access_log else None)
        gw.loop = self.loop
        gw._set_now(self.loop.time())  # as Gateway.start
        w = self.worker = Worker("http://127.0.0.1:8001", ("mock-model",))
        w.pool = UpstreamPool.from_config(self.loop, w.host, w.port, cfg)
        gw.registry.add(w)
        gw.registry.set_status(w, READY)
        self.conn = UpstreamConnection(w.pool)
        self.conn.connection_made(MemoryTransport())
        w.pool.open = 1
        w.pool.put(self.conn)
        self.client = MemoryTransport()
        self.n = 0
        self.proto = HTTPServerProtocol(gw.site)
        self.proto.connection_made(self.client)

    def one(self, response: bytes = RESPONSE) -> None:
        """One proxied request, start to end (``response``: the worker's bytes, one read)."""
        self.proto.data_received(REQUEST)
        self.conn.data_received(response)
        self.client.out.clear()
        self.conn.transport.out.clear()
        self.n += 1
        if self.gw.access_log is not None and not self.n % 64:
            # the live gateway flushes once per 0.1 s tick, i.e. once per many requests
            self.gw.access_log.flush()
            self.log.seek(0)
            self.log.truncate()

    def one_stream(self) -> None:
        """One proxied streamed request: 10 SSE events, then [DONE]."""
        self.one(STREAM_RESPONSE)

    def close(self) -> None:
        self.loop.close()
