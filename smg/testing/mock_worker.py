"""An OpenAI-compatible fake inference engine on a raw ``asyncio.Protocol``.

Used by the test suite, by ``smg-proxy``'s demo mode (two of these when no worker is
given) and by the benchmark rig (bench/rig/compare.py), so it has to be fast enough
never to be the bottleneck of a gateway measurement.

Theory of operation: one ``_MockProtocol`` per connection feeds bytes to smg's own
``RequestParser`` (the native twin when built) and answers each complete request in
arrival order (keep-alive and pipelining). A request is answered either synchronously
inside ``data_received`` (the canned fast path: no delays, no failure injection) or by a
task (streams with delays, ``ttft``/``token_delay``, ``hang``); while a task owns the
connection, later pipelined requests wait in a queue, so answers stay in order.

The fast path costs a few microseconds of Python: the response for a given
(endpoint, model, prompt size) is rendered once into bytes with a fixed-width
placeholder where the per-request id goes, split on it, and each request then only
does ``id.join(parts)``. Templates are rebuilt when the config changes (``MockConfig``
counts its own assignments) and the cache is bounded.

Endpoints (GET unless said): ``/health``, ``/health_generate``, ``/liveness``,
``/readiness``; ``/v1/models``; ``/get_model_info`` and ``/model_info``;
``/get_server_info`` and ``/server_info``; ``/version``; ``/v1/loads``; ``/metrics``
(a few SGLang-style gauges); POST ``/v1/chat/completions``, ``/v1/completions``,
``/generate``, ``/v1/embeddings``, ``/v1/rerank``, ``/rerank``, ``/v1/messages``,
``/flush_cache``. Mock admin: GET ``/_mock/stats``, GET/POST ``/_mock/config`` (POST
merges a JSON object into the config), POST ``/_mock/reset`` (zeroes the stats).
Unknown path → 404, known path with another method → 405 (with ``Allow``).

Failure injection (inference endpoints only; ``/health`` follows ``health_status``):
``fail_mode`` None with ``fail_status`` set means "status"; each inference request
fails with probability ``fail_rate`` (default 1.0):
- "status": answer ``fail_status`` (500 if unset) with an OpenAI (or, for
  ``/v1/messages``, Anthropic) error body;
- "reset": abort the TCP connection with an RST before answering;
- "cut": send the head and ``cut_after_chunks`` SSE events (a non-streaming request:
  half its body) then abort: the client sees an incomplete body;
- "hang": never answer (the connection stays open until the client leaves or the
  worker stops).

Stats (``MockWorker.stats``) count every request except ``/_mock/*`` ones.
"""
from __future__ import annotations

import asyncio
import base64
import math
import os
import random
import socket
import struct
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any

import orjson

from smg.errors import RemoteProtocolError
from smg.http1.events import Data, Request
from smg.http1.parser import RequestParser

__all__ = ["FAIL_MODES", "MockConfig", "MockStats", "MockWorker", "mock_worker_command", "start_mock_workers"]

FAIL_MODES = (None, "status", "reset", "cut", "hang")

# Per-request ids are 16 ASCII chars: 6 hex chars per worker instance + a 10-digit counter.
# Templates carry this placeholder (same length, so Content-Length and chunk sizes hold).
_ID_LEN = 16
_PH = "@@mock@id@slot@@"
_PHB = _PH.encode()
assert len(_PH) == _ID_LEN

_TEMPLATE_CACHE_MAX = 256
_QUEUE_PAUSE = 32  # pipelined requests queued behind a slow one before we stop reading
_STREAM_BATCH = 64  # SSE events per write on the zero-delay stream path

_WORDS = ("Hello", " from", " the", " smg", " mock", " worker", ".", " This", " is", " token",
          " text", " for", " testing", " gateways", ",", " nothing", " more", "!")

_dumps = orjson.dumps
_loads = orjson.loads

_STATUS_LINES: dict = {}


def _status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[code] = b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode())
    return line


def _tokens(n: int) -> list:
    return [_WORDS[i % len(_WORDS)] for i in range(n)]


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = b"[DONE]" if obj is None else _dumps(obj)
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


# --------------------------------------------------------------------------- config


@dataclass
class MockConfig:
    """Behaviour of a mock worker; may be changed at any time (also via POST /_mock/config).

    Attributes:
        model: model id served (``/v1/models``); responses echo the request's model.
        worker_id: ``x-mock-worker`` header value; empty → ``mock-<port>`` at start.
        ttft: seconds before the first token (streams) or added to the answer (non-streaming).
        token_delay: seconds between tokens (non-streaming: ``num_chunks`` × this, added).
        num_chunks: content tokens/chunks per answer.
        fail_status: None, or the status every inference request fails with.
        fail_rate: probability (0..1) that an inference request fails when failure is set.
        fail_mode: None | "status" | "reset" | "cut" | "hang" (module docstring).
        cut_after_chunks: SSE events sent before a "cut" aborts the stream.
        embedding_dim: length of ``/v1/embeddings`` vectors.
        health_status: status of ``/health``, ``/health_generate``, ``/readiness``.
        owned_by: ``owned_by`` in ``/v1/models``. SMG (Rust) reads it to detect the engine:
            "sglang" or "vllm" are taken at their word; anything else makes it probe
            ``/version`` (served here, so it settles on vllm).
    """

    model: str = "mock-model"
    worker_id: str = ""
    ttft: float = 0.0
    token_delay: float = 0.0
    num_chunks: int = 8
    fail_status: int | None = None
    fail_rate: float = 1.0
    fail_mode: str | None = None
    cut_after_chunks: int = 2
    embedding_dim: int = 8
    health_status: int = 200
    owned_by: str = "mock"

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        # Every assignment bumps the version; the worker rebuilds its templates on change.
        object.__setattr__(self, "_version", getattr(self, "_version", 0) + 1)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, changes: dict) -> None:
        """Validates and applies ``changes`` (a JSON merge).

        Raises:
            ValueError: an unknown key or a value of the wrong type or range; nothing applied.
        """
        if not isinstance(changes, dict):
            raise ValueError("config must be a JSON object")
        known = {f.name for f in fields(self)}
        checked = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}")
            checked[key] = _check_field(key, value)
        for key, value in checked.items():
            setattr(self, key, value)


def _check_field(key: str, value: Any) -> Any:
    def bad(what: str) -> ValueError:
        return ValueError(f"{key}: {what}, got {value!r}")

    if key in ("model", "worker_id", "owned_by"):
        if not isinstance(value, str):
            raise bad("expected a string")
        return value
    if key in ("ttft", "token_delay"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise bad("expected seconds >= 0")
        return float(value)
    if key == "fail_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise bad("expected a probability in [0, 1]")
        return float(value)
    if key in ("num_chunks", "cut_after_chunks"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("expected an integer >= 0")
        return value
    if key == "embedding_dim":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("expected an integer >= 1")
        return value
    if key in ("fail_status", "health_status"):
        if value is None and key == "fail_status":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise bad("expected an HTTP status")
        return value
    if key == "fail_mode":
        if value not in FAIL_MODES:
            raise bad(f"expected one of {FAIL_MODES}")
        return value
    raise bad("unknown key")  # pragma: no cover - guarded by update()


@dataclass
class MockStats:
    """What a mock worker saw. ``/_mock/*`` requests are not counted.

    Attributes:
        requests: requests answered or in flight, every path.
        paths: request count per path (query string stripped).
        cancelled: streams whose client hung up before the stream ended.
        aborted: non-streaming requests whose client hung up before the answer.
        completed_streams: streams sent to the end.
        failures: inference requests failed on purpose (fail_status / fail_mode).
        open_connections / total_connections: current and accepted connections.
        last_body: parsed JSON of the last inference request.
        last_headers: headers of the last inference request (lower-case str → str).
    """

    requests: int = 0
    paths: dict = field(default_factory=dict)
    cancelled: int = 0
    aborted: int = 0
    completed_streams: int = 0
    failures: int = 0
    open_connections: int = 0
    total_connections: int = 0
    last_body: Any = None
    _raw_headers: list = field(default_factory=list, repr=False)

    @property
    def last_headers(self) -> dict:
        # Decoded on demand: the hot path only keeps the parser's list.
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw_headers}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["paths"] = dict(self.paths)
        d["last_headers"] = self.last_headers
        return d


# --------------------------------------------------------------------------- templates
# Each builder returns (head, parts) for a non-streaming answer, where head is the status
# line and headers without the blank line, and body == idb.join(parts); or, for a stream,
# (head, frames, kinds): frames are chunk-framed SSE events split on the placeholder,
# kinds[i] is True for a content token (token_delay applies between those).


def _json_head(status: int, whdr: bytes, length: int) -> bytes:
    return b"%scontent-type: application/json\r\ncontent-length: %d\r\n%s" % (_status_line(status), length, whdr)


_STREAM_HEAD_TAIL = (b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n")


def _canned(whdr: bytes, body: bytes, status: int = 200) -> tuple:
    return _json_head(status, whdr, len(body)), body.split(_PHB)


def _stream(whdr: bytes, events: list) -> tuple:
    head = _status_line(200) + _STREAM_HEAD_TAIL + whdr
    frames = [_chunk(ev).split(_PHB) for ev, _ in events]
    kinds = [tok for _, tok in events]
    return head, frames, kinds


def _usage(p: int, k: int) -> dict:
    return {"prompt_tokens": p, "completion_tokens": k, "total_tokens": p + k}


def _build_chat(cfg: MockConfig, whdr: bytes, model: str, p: int, stream: bool, usage: bool) -> tuple:
    created = int(time.time())
    toks = _tokens(cfg.num_chunks)
    k = len(toks)
    rid = "chatcmpl-" + _PH
    if not stream:
        return _canned(whdr, _dumps({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(toks)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(p, k),
        }))

    def ck(delta: dict, finish: str | None = None) -> dict:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [(_sse(ck({"role": "assistant", "content": ""})), False)]
    events += [(_sse(ck({"content": t})), True) for t in toks]
    events.append((_sse(ck({}, "stop")), False))
    if usage:
        events.append((_sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": _usage(p, k)}), False))
    events.append((_sse(None), False))
    return _stream(whdr, events)


def _build_completion(cfg: MockConfig, whdr: bytes, model: str, p: int, stream: bool, usage: bool) -> tuple:
    created = int(time.time())
    toks = _tokens(cfg.num_chunks)
    k = len(toks)
    rid = "cmpl-" + _PH
    if not stream:
        return _canned(whdr, _dumps({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": "".join(toks), "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(p, k),
        }))

    def ck(text: str, finish: str | None = None) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    events = [(_sse(ck(t)), True) for t in toks]
    events.append((_sse(ck("", "stop")), False))
    if usage:
        events.append((_sse({"id": rid, "object": "text_completion", "created": created, "model": model,
                             "choices": [], "usage": _usage(p, k)}), False))
    events.append((_sse(None), False))
    return _stream(whdr, events)


def _generate_result(toks: list, p: int) -> dict:
    return {"text": "".join(toks),
            "meta_info": {"id": _PH, "prompt_tokens": p, "completion_tokens": len(toks),
                          "finish_reason": {"type": "stop"}}}


def _build_generate(cfg: MockConfig, whdr: bytes, model: str, p: int, stream: bool, usage: bool) -> tuple:
    toks = _tokens(cfg.num_chunks)
    if not stream:
        return _canned(whdr, _dumps(_generate_result(toks, p)))
    events = []
    n = len(toks)
    for i in range(n):
        events.append((_sse({"text": "".join(toks[:i + 1]),
                             "meta_info": {"id": _PH, "prompt_tokens": p, "completion_tokens": i + 1,
                                           "finish_reason": {"type": "stop"} if i == n - 1 else None}}), True))
    if n == 0:
        events.append((_sse(_generate_result([], p)), False))
    events.append((_sse(None), False))
    return _stream(whdr, events)


def _build_messages(cfg: MockConfig, whdr: bytes, model: str, p: int, stream: bool, usage: bool) -> tuple:
    toks = _tokens(cfg.num_chunks)
    mid = "msg_" + _PH
    if not stream:
        return _canned(whdr, _dumps({
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "".join(toks)}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": p, "output_tokens": len(toks)},
        }))
    events = [
        (_sse({"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": 1}}},
            "message_start"), False),
        (_sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              "content_block_start"), False),
    ]
    events += [(_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                     "content_block_delta"), True) for t in toks]
    events += [
        (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
        (_sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
               "usage": {"output_tokens": len(toks)}}, "message_delta"), False),
        (_sse({"type": "message_stop"}, "message_stop"), False),
    ]
    return _stream(whdr, events)


# --------------------------------------------------------------------------- helpers


def _openai_error(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 405: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error")
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


def _anthropic_error(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(
        status, "api_error" if status >= 500 else "invalid_request_error")
    return _dumps({"type": "error", "error": {"type": kind, "message": message}})


def _embedding(text: Any, dim: int) -> list:
    """A deterministic unit vector for ``text`` (same input → same vector on every worker)."""
    seed = zlib.crc32(text.encode() if isinstance(text, str) else _dumps(text)) or 1
    out = []
    for _ in range(dim):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(seed / 0x3FFFFFFF - 1.0)
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]


def _prompt_tokens(body: bytes) -> int:
    # A rough size estimate (4 bytes of request JSON per token): cheap and deterministic.
    return max(1, len(body) >> 2)


def _set_rst(transport: asyncio.BaseTransport) -> None:
    """Make the coming close send an RST (SO_LINGER with a zero timeout)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - platform without SO_LINGER
            pass


# --------------------------------------------------------------------------- protocol


class _MockProtocol(asyncio.Protocol):
    __slots__ = ("w", "transport", "parser", "req", "body", "queue", "busy", "streaming", "paused",
                 "drain", "task", "closed", "extra", "keep")

    def __init__(self, worker: MockWorker) -> None:
        self.w = worker
        self.transport: Any = None
        self.parser = RequestParser()
        self.req: Any = None
        self.body: list = []
        self.queue: deque = deque()
        self.busy = False  # a task (or a hang) owns the connection's answer
        self.streaming = False
        self.paused = False
        self.drain: Any = None
        self.task: Any = None
        self.closed = False
        self.extra = b""
        self.keep = True

    # -- asyncio callbacks

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        st = self.w.stats
        st.open_connections += 1
        st.total_connections += 1
        self.w._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.w
        w.stats.open_connections -= 1
        w._conns.discard(self)
        if self.busy:
            if self.streaming:
                w.stats.cancelled += 1
            else:
                w.stats.aborted += 1
            self.busy = False
            w._inflight -= 1
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.queue.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            if self.busy:
                self.queue.append((None, e))
            else:
                self._protocol_error(e)
            return
        for ev in events:
            t = type(ev)
            if t is Data:
                self.body.append(ev.data)
            elif t is Request:
                self.req = ev
                if ev.expect_continue and not self.busy and not self.queue:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:  # EndOfMessage
                body = self.body
                body = (body[0] if len(body) == 1 else b"".join(body)) if body else b""
                self.body = []
                if self.busy or self.queue:
                    self.queue.append((self.req, body))
                    if len(self.queue) == _QUEUE_PAUSE:
                        self.transport.pause_reading()
                else:
                    self._handle(self.req, body)
                if self.closed or self.transport.is_closing():
                    return

    def eof_received(self) -> bool:
        # EOF is taken as the client going away (as gateways and engines do): answers
        # already written are flushed, one still in progress (a stream, a delay, a hang)
        # is dropped and counted in stats.cancelled / stats.aborted.
        return False

    # -- request handling

    def _handle(self, req: Request, body: bytes) -> None:
        target = req.target
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        route = _ROUTES.get(path)
        extra = b""
        for name, value in req.headers:
            if name == b"x-request-id":
                extra = b"x-request-id: " + value + b"\r\n"
                break
        keep = req.keep_alive
        if not keep:
            extra += b"connection: close\r\n"
        self.extra = extra
        self.keep = keep
        w = self.w
        if not path.startswith(b"/_mock/"):
            st = w.stats
            st.requests += 1
            key = path.decode("latin-1")
            paths = st.paths
            paths[key] = paths.get(key, 0) + 1
        if route is None:
            self._error(404, f"no route for {path.decode('latin-1')}")
            return
        handler = route.get(req.method)
        if handler is None:
            allow = b", ".join(sorted(route))
            self._respond(405, _openai_error(405, f"method {req.method.decode('latin-1')} not allowed"),
                          b"allow: " + allow + b"\r\n")
            return
        if w._tmpl_version != w.config._version:
            w._reset_templates()
        handler(self, req, body)

    def _done(self) -> None:
        """The current answer was written completely."""
        if not self.keep:
            self.transport.close()

    def _respond(self, status: int, body: bytes, headers: bytes = b"", ctype: bytes = b"application/json") -> None:
        head = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s%s%s\r\n" % (
            _status_line(status), ctype, len(body), self.w._whdr, headers, self.extra)
        self.transport.write(head + body)
        self._done()

    def _json(self, obj: Any, status: int = 200) -> None:
        self._respond(status, _dumps(obj))

    def _error(self, status: int, message: str, anthropic: bool = False) -> None:
        self._respond(status, _anthropic_error(status, message) if anthropic else _openai_error(status, message))

    def _protocol_error(self, e: RemoteProtocolError) -> None:
        self.extra = b"connection: close\r\n"
        self.keep = False
        self._error(e.status_hint, str(e))

    def _inference_body(self, req: Request, body: bytes, anthropic: bool = False) -> Any:
        """Parses and records an inference request; None when it was answered (400)."""
        st = self.w.stats
        st._raw_headers = req.headers
        try:
            obj = _loads(body)
        except ValueError:
            st.last_body = None
            self._error(400, "request body is not valid JSON", anthropic)
            return None
        st.last_body = obj
        if type(obj) is not dict:
            self._error(400, "request body must be a JSON object", anthropic)
            return None
        return obj

    def _failure(self) -> str | None:
        cfg = self.w.config
        mode = cfg.fail_mode
        if mode is None:
            if cfg.fail_status is None:
                return None
            mode = "status"
        if cfg.fail_rate < 1.0 and random.random() >= cfg.fail_rate:
            return None
        self.w.stats.failures += 1
        return mode

    def _fail(self, mode: str, anthropic: bool, stream_tmpl: Any) -> None:
        """Carries out an injected failure; ``stream_tmpl`` is the answer a cut truncates."""
        cfg = self.w.config
        if mode == "status":
            status = cfg.fail_status or 500
            self._error(status, f"mock worker injected failure (status {status})", anthropic)
        elif mode == "reset":
            _set_rst(self.transport)
            self.transport.abort()
        elif mode == "hang":
            self._begin(False)
        elif mode == "cut":
            if len(stream_tmpl) == 3:
                self._begin(True)
                self.task = asyncio.get_running_loop().create_task(
                    self._stream_task(stream_tmpl, self.w._next_id(), self.extra, cfg.cut_after_chunks))
            else:  # non-streaming: half the body, then abort
                head, parts = stream_tmpl
                full = self.w._next_id().join(parts)
                self.transport.write(b"".join((head, self.extra, b"\r\n", full[:len(full) // 2])))
                self.transport.abort()

    def _begin(self, streaming: bool) -> None:
        self.busy = True
        self.streaming = streaming
        self.w._inflight += 1

    def _release(self) -> None:
        """The task that owned the answer no longer does (it finished, or cut on purpose)."""
        if self.busy:
            self.busy = False
            self.streaming = False
            self.w._inflight -= 1
        self.task = None

    def _finish(self) -> None:
        """The task that owned the answer is done: resume the pipeline."""
        self._release()
        if self.closed:
            return
        self._done()
        self._run_queue()

    def _run_queue(self) -> None:
        queue = self.queue
        while queue and not self.busy and not self.closed and not self.transport.is_closing():
            req, body = queue.popleft()
            if req is None:
                self._protocol_error(body)
                return
            self._handle(req, body)
        if not self.closed and len(queue) < _QUEUE_PAUSE and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- the generation endpoints

    def _generation(self, req: Request, body: bytes, kind: int) -> None:
        # The hot path of every benchmark: keep it flat (few calls, no per-request rendering).
        w = self.w
        st = w.stats
        st._raw_headers = req.headers
        try:
            obj = _loads(body)
        except ValueError:
            st.last_body = None
            self._error(400, "request body is not valid JSON", kind == _K_MESSAGES)
            return
        st.last_body = obj
        if type(obj) is not dict:
            self._error(400, "request body must be a JSON object", kind == _K_MESSAGES)
            return
        model = obj.get("model")
        if type(model) is not str:
            model = w.config.model
        stream = obj.get("stream") is True
        usage = False
        if stream:
            so = obj.get("stream_options")
            usage = type(so) is dict and so.get("include_usage") is True
        elif kind == _K_GENERATE and type(obj.get("text")) is list:
            self._generate_batch(obj, body)
            return
        key = (kind, model, len(body) >> 2, stream, usage)  # prompt size: see _prompt_tokens
        tmpl = w._templates.get(key)
        if tmpl is None:
            tmpl = w._template(key)
        w._counter = n = w._counter + 1
        idb = w._id_prefix + b"%010d" % (n % 10_000_000_000)
        if w._plain:
            if stream:
                self._start_stream(tmpl, idb)
                return
            head, parts = tmpl
            self.transport.write(b"".join((head, self.extra, b"\r\n", idb.join(parts))))
            if not self.keep:
                self.transport.close()
            return
        cfg = w.config
        if cfg.fail_status is not None or cfg.fail_mode is not None:
            mode = self._failure()
            if mode is not None:
                self._fail(mode, kind == _K_MESSAGES, tmpl)
                return
        if stream:
            self._start_stream(tmpl, idb)
        elif cfg.ttft or cfg.token_delay:
            self._begin(False)
            self.task = asyncio.get_running_loop().create_task(
                self._delayed(tmpl, idb, self.extra, cfg.ttft + cfg.token_delay * cfg.num_chunks))
        else:
            head, parts = tmpl
            self.transport.write(b"".join((head, self.extra, b"\r\n", idb.join(parts))))
            if not self.keep:
                self.transport.close()

    def _chat(self, req: Request, body: bytes) -> None:
        self._generation(req, body, _K_CHAT)

    def _completions(self, req: Request, body: bytes) -> None:
        self._generation(req, body, _K_COMPLETION)

    def _generate(self, req: Request, body: bytes) -> None:
        self._generation(req, body, _K_GENERATE)

    def _messages(self, req: Request, body: bytes) -> None:
        self._generation(req, body, _K_MESSAGES)

    def _generate_batch(self, obj: dict, body: bytes) -> None:
        toks = _tokens(self.w.config.num_chunks)
        n = len(obj["text"])
        out = [_generate_result(toks, _prompt_tokens(body) // max(n, 1) or 1) for _ in range(n)]
        for r in out:
            r["meta_info"]["id"] = self.w._next_id().decode()
        self._json(out)

    def _start_stream(self, tmpl: tuple, idb: bytes) -> None:
        cfg = self.w.config
        if cfg.ttft or cfg.token_delay or self.paused:
            self._begin(True)
            self.task = asyncio.get_running_loop().create_task(self._stream_task(tmpl, idb, self.extra, None))
            return
        head, frames, _ = tmpl
        t = self.transport
        if len(frames) <= _STREAM_BATCH:
            t.write(b"".join([head, self.extra, b"\r\n"] + [idb.join(f) for f in frames] + [b"0\r\n\r\n"]))
            self.w.stats.completed_streams += 1
            self._done()
            return
        # A long stream: write in batches and hand over to a task when the transport pushes back.
        t.write(head + self.extra + b"\r\n")
        for i in range(0, len(frames), _STREAM_BATCH):
            t.write(b"".join([idb.join(f) for f in frames[i:i + _STREAM_BATCH]]))
            if self.paused and i + _STREAM_BATCH < len(frames):
                self._begin(True)
                self.task = asyncio.get_running_loop().create_task(
                    self._stream_task(tmpl, idb, b"", None, start=i + _STREAM_BATCH))
                return
        t.write(b"0\r\n\r\n")
        self.w.stats.completed_streams += 1
        self._done()

    async def _wait_writable(self) -> None:
        if self.paused and not self.closed:
            self.drain = asyncio.get_running_loop().create_future()
            await self.drain
            self.drain = None

    async def _stream_task(self, tmpl: tuple, idb: bytes, extra: bytes, cut_after: int | None,
                           start: int = 0) -> None:
        """Streams ``tmpl`` with the configured delays; ``cut_after`` events then abort."""
        head, frames, kinds = tmpl
        cfg = self.w.config
        t = self.transport
        sleep = asyncio.sleep
        try:
            if start == 0:
                t.write(head + extra + b"\r\n")
                if cfg.ttft:
                    await sleep(cfg.ttft)
            seen_token = False
            for i in range(start, len(frames)):
                if self.closed:
                    return
                if cut_after is not None and i >= cut_after:
                    self._release()
                    t.abort()
                    return
                if kinds[i]:
                    if seen_token and cfg.token_delay:
                        await sleep(cfg.token_delay)
                        if self.closed:
                            return
                    seen_token = True
                t.write(idb.join(frames[i]))
                if self.paused:
                    await self._wait_writable()
            if self.closed:
                return
            if cut_after is not None:
                self._release()
                t.abort()
                return
            t.write(b"0\r\n\r\n")
            self.w.stats.completed_streams += 1
        except asyncio.CancelledError:
            return
        self._finish()

    async def _delayed(self, tmpl: tuple, idb: bytes, extra: bytes, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            return
        if self.closed:
            return
        head, parts = tmpl
        self.transport.write(b"".join((head, extra, b"\r\n", idb.join(parts))))
        self._finish()

    # -- other inference endpoints (not on the benchmark's hot path)

    def _simple_inference(self, req: Request, body: bytes) -> Any:
        obj = self._inference_body(req, body)
        if obj is None:
            return None
        cfg = self.w.config
        if cfg.fail_status is not None or cfg.fail_mode is not None:
            mode = self._failure()
            if mode is not None:
                payload = _dumps({"error": "cut"})
                self._fail(mode, False, (_json_head(200, self.w._whdr, len(payload)), [payload]))
                return None
        return obj

    def _embeddings(self, req: Request, body: bytes) -> None:
        obj = self._simple_inference(req, body)
        if obj is None:
            return
        cfg = self.w.config
        inp = obj.get("input")
        if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
            inputs = [inp]
        elif isinstance(inp, list) and inp:
            inputs = inp
        else:
            self._error(400, "'input' must be a string, a list of strings or token ids")
            return
        dim = obj.get("dimensions") if isinstance(obj.get("dimensions"), int) else cfg.embedding_dim
        b64 = obj.get("encoding_format") == "base64"
        data = []
        for i, x in enumerate(inputs):
            vec = _embedding(x, dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        p = _prompt_tokens(body)
        self._json({"object": "list", "data": data, "model": obj.get("model") or cfg.model,
                    "usage": {"prompt_tokens": p, "total_tokens": p}})

    def _rerank(self, req: Request, body: bytes) -> None:
        obj = self._simple_inference(req, body)
        if obj is None:
            return
        query = obj.get("query")
        docs = obj.get("documents")
        if not isinstance(query, str) or not isinstance(docs, list):
            self._error(400, "rerank needs 'query' (string) and 'documents' (list)")
            return
        # SGLang's /v1/rerank shape: a list sorted by score, best first.
        qv = _embedding(query, 8)
        out = []
        for i, d in enumerate(docs):
            text = d if isinstance(d, str) else _dumps(d).decode()
            score = sum(a * b for a, b in zip(qv, _embedding(text, 8)))
            item = {"score": score, "index": i, "meta_info": {"id": self.w._next_id().decode()}}
            if obj.get("return_documents", True):
                item["document"] = text
            out.append(item)
        out.sort(key=lambda r: -r["score"])
        top_n = obj.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            out = out[:top_n]
        self._json(out)

    # -- info endpoints

    def _health(self, req: Request, body: bytes) -> None:
        status = self.w.config.health_status
        if status == 200:
            self._respond(200, b"", ctype=b"text/plain")
        else:
            self._error(status, "mock worker is unhealthy")

    def _liveness(self, req: Request, body: bytes) -> None:
        self._respond(200, b"", ctype=b"text/plain")

    def _models(self, req: Request, body: bytes) -> None:
        w = self.w
        self._json({"object": "list", "data": [{"id": w.config.model, "object": "model", "created": w.created,
                                                 "owned_by": w.config.owned_by, "root": w.config.model,
                                                 "max_model_len": 32768}]})

    def _model_info(self, req: Request, body: bytes) -> None:
        m = self.w.config.model
        self._json({"model_path": m, "tokenizer_path": m, "is_generation": True,
                    "preferred_sampling_params": None, "weight_version": "default"})

    def _server_info(self, req: Request, body: bytes) -> None:
        w = self.w
        m = w.config.model
        self._json({"model_path": m, "tokenizer_path": m, "served_model_name": m, "version": _version(),
                    "dp_size": 1, "tp_size": 1, "context_length": 32768, "max_total_num_tokens": 524288,
                    "host": w.host, "port": w.port, "worker_id": w.config.worker_id, "engine": "smg-mock",
                    "internal_states": [{"last_gen_throughput": 0.0}]})

    def _version_ep(self, req: Request, body: bytes) -> None:
        self._json({"version": _version()})

    def _loads(self, req: Request, body: bytes) -> None:
        w = self.w
        running = w._inflight
        load = {"dp_rank": 0, "num_running_reqs": running, "num_waiting_reqs": 0, "num_total_reqs": running,
                "num_waiting_uncached_tokens": 0, "num_used_tokens": 0, "max_total_num_tokens": 524288,
                "token_usage": 0.0, "gen_throughput": 0.0, "cache_hit_rate": 0.0, "utilization": 0.0,
                "max_running_requests": 256}
        self._json({"timestamp": time.time(), "version": _version(), "dp_rank_count": 1, "loads": [load],
                    "aggregate": {"total_running_reqs": running, "total_waiting_reqs": 0,
                                  "total_reqs": running, "avg_token_usage": 0.0, "avg_throughput": 0.0,
                                  "avg_utilization": 0.0}})

    def _metrics(self, req: Request, body: bytes) -> None:
        w = self.w
        m = w.config.model
        lines = [f'sglang:num_running_reqs{{model_name="{m}"}} {w._inflight}',
                 f'sglang:num_queue_reqs{{model_name="{m}"}} 0',
                 f'sglang:token_usage{{model_name="{m}"}} 0.0',
                 f'sglang:gen_throughput{{model_name="{m}"}} 0.0',
                 f'sglang:cache_hit_rate{{model_name="{m}"}} 0.0',
                 f'vllm:num_requests_running{{model_name="{m}"}} {w._inflight}',
                 f'vllm:num_requests_waiting{{model_name="{m}"}} 0',
                 f'vllm:kv_cache_usage_perc{{model_name="{m}"}} 0.0', ""]
        self._respond(200, "\n".join(lines).encode(), ctype=b"text/plain; version=0.0.4")

    def _flush_cache(self, req: Request, body: bytes) -> None:
        self._respond(200, b"Cache flushed.\n", ctype=b"text/plain")

    # -- mock admin

    def _mock_stats(self, req: Request, body: bytes) -> None:
        self._json(self.w.stats.to_dict())

    def _mock_config_get(self, req: Request, body: bytes) -> None:
        self._json(self.w.config.to_dict())

    def _mock_config_post(self, req: Request, body: bytes) -> None:
        try:
            self.w.config.update(_loads(body or b"{}"))
        except ValueError as e:
            self._error(400, str(e))
            return
        self.w._reset_templates()
        self._json(self.w.config.to_dict())

    def _mock_reset(self, req: Request, body: bytes) -> None:
        self.w.reset_stats()
        self._json({"ok": True})


_K_CHAT, _K_COMPLETION, _K_GENERATE, _K_MESSAGES = range(4)
_BUILDERS = {_K_CHAT: _build_chat, _K_COMPLETION: _build_completion, _K_GENERATE: _build_generate,
             _K_MESSAGES: _build_messages}

_P = _MockProtocol
_ROUTES: dict = {
    b"/health": {b"GET": _P._health},
    b"/health_generate": {b"GET": _P._health},
    b"/readiness": {b"GET": _P._health},
    b"/liveness": {b"GET": _P._liveness},
    b"/v1/models": {b"GET": _P._models},
    b"/get_model_info": {b"GET": _P._model_info},
    b"/model_info": {b"GET": _P._model_info},
    b"/get_server_info": {b"GET": _P._server_info},
    b"/server_info": {b"GET": _P._server_info},
    b"/version": {b"GET": _P._version_ep},
    b"/v1/loads": {b"GET": _P._loads},
    b"/metrics": {b"GET": _P._metrics},
    b"/flush_cache": {b"POST": _P._flush_cache},
    b"/v1/chat/completions": {b"POST": _P._chat},
    b"/v1/completions": {b"POST": _P._completions},
    b"/generate": {b"POST": _P._generate},
    b"/v1/messages": {b"POST": _P._messages},
    b"/v1/embeddings": {b"POST": _P._embeddings},
    b"/v1/rerank": {b"POST": _P._rerank},
    b"/rerank": {b"POST": _P._rerank},
    b"/_mock/stats": {b"GET": _P._mock_stats},
    b"/_mock/config": {b"GET": _P._mock_config_get, b"POST": _P._mock_config_post},
    b"/_mock/reset": {b"POST": _P._mock_reset},
}


def _version() -> str:
    try:
        from smg._version import __version__
    except ImportError:  # pragma: no cover
        return "0"
    return __version__


# --------------------------------------------------------------------------- worker


class MockWorker:
    """One mock inference worker listening on a TCP port.

    Usage::

        w = MockWorker(MockConfig(num_chunks=4))
        await w.start()            # 127.0.0.1, a free port
        ... w.url, w.port, w.stats, w.config.fail_status = 503 ...
        await w.stop()
    """

    def __init__(self, config: MockConfig | None = None, **overrides: Any) -> None:
        self._config = config if config is not None else MockConfig()
        if overrides:
            self._config.update(overrides)
        self.stats = MockStats()
        self.host = "127.0.0.1"
        self.port = 0
        self.created = int(time.time())
        self._server: Any = None
        self._conns: set = set()
        self._inflight = 0
        self._templates: dict = {}
        self._tmpl_version = -1
        self._plain = True
        self._whdr = b""
        self._id_prefix = os.urandom(3).hex().encode()
        self._counter = 0

    @property
    def config(self) -> MockConfig:
        return self._config

    @config.setter
    def config(self, value: MockConfig) -> None:
        self._config = value
        self._reset_templates()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> MockWorker:
        """Listens on ``host:port`` (0 = a free port); returns once accepting."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _MockProtocol(self), host, port, backlog=1024)
        sockname = self._server.sockets[0].getsockname()
        self.host = host
        self.port = sockname[1]
        if not self._config.worker_id:
            self._config.worker_id = f"mock-{self.port}"
        self._reset_templates()
        return self

    async def stop(self) -> None:
        """Stops listening and drops every connection (hung and streaming ones included)."""
        if self._server is not None:
            self._server.close()
        for proto in list(self._conns):
            if proto.transport is not None:
                proto.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    def reset_stats(self) -> None:
        """Zeroes the counters in place (``open_connections`` keeps counting live ones)."""
        fresh = MockStats()
        for f in fields(MockStats):
            if f.name != "open_connections":
                setattr(self.stats, f.name, getattr(fresh, f.name))

    async def __aenter__(self) -> MockWorker:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- internals shared with the protocol

    def _next_id(self) -> bytes:
        self._counter += 1
        return b"%s%010d" % (self._id_prefix, self._counter % 10_000_000_000)

    def _reset_templates(self) -> None:
        cfg = self._config
        self._templates = {}
        self._tmpl_version = cfg._version
        # Nothing to inject or wait for: the generation endpoints answer inline.
        self._plain = (cfg.fail_status is None and cfg.fail_mode is None and not cfg.ttft
                       and not cfg.token_delay)
        wid = cfg.worker_id.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")
        self._whdr = b"x-mock-worker: " + wid + b"\r\n"

    def _template(self, key: tuple) -> tuple:
        kind, model, p, stream, usage = key
        p = max(p, 1)
        tmpl = _BUILDERS[kind](self._config, self._whdr, model, p, stream, usage)
        if len(self._templates) >= _TEMPLATE_CACHE_MAX:
            self._templates.clear()
        self._templates[key] = tmpl
        return tmpl


async def start_mock_workers(n: int, host: str = "127.0.0.1", **config: Any) -> list:
    """Starts ``n`` workers on free ports, each with its own ``MockConfig(**config)``."""
    workers = []
    try:
        for _ in range(n):
            workers.append(await MockWorker(MockConfig(**config)).start(host))
    except BaseException:
        for w in workers:
            await w.stop()
        raise
    return workers


# --------------------------------------------------------------------------- CLI


def _cli_command() -> Any:
    import click

    @click.command("mock-worker")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8000, show_default=True, type=int, help="Port (0 = any free port).")
    @click.option("--model", default="mock-model", show_default=True)
    @click.option("--worker-id", default="", help="x-mock-worker value [default: mock-<port>].")
    @click.option("--ttft", default=0.0, show_default=True, type=float, help="Seconds to the first token.")
    @click.option("--token-delay", default=0.0, show_default=True, type=float, help="Seconds between tokens.")
    @click.option("--num-chunks", default=8, show_default=True, type=int, help="Tokens per answer.")
    @click.option("--fail-status", default=None, type=int, help="Fail inference requests with this status.")
    @click.option("--fail-rate", default=1.0, show_default=True, type=float,
                  help="Probability that an inference request fails (with a fail status/mode set).")
    @click.option("--fail-mode", default=None, type=click.Choice(["status", "reset", "cut", "hang"]))
    @click.option("--cut-after-chunks", default=2, show_default=True, type=int)
    @click.option("--embedding-dim", default=8, show_default=True, type=int)
    @click.option("--owned-by", default="mock", show_default=True,
                  help="owned_by in /v1/models (sglang/vllm make SMG detect that engine).")
    def mock_worker_command(host: str, port: int, model: str, worker_id: str, ttft: float, token_delay: float,
                            num_chunks: int, fail_status: int | None, fail_rate: float, fail_mode: str | None,
                            cut_after_chunks: int, embedding_dim: int, owned_by: str) -> None:
        """Run one OpenAI-compatible mock inference worker until interrupted."""
        try:
            cfg = MockConfig()
            cfg.update({"model": model, "worker_id": worker_id, "ttft": ttft, "token_delay": token_delay,
                        "num_chunks": num_chunks, "fail_status": fail_status, "fail_rate": fail_rate,
                        "fail_mode": fail_mode, "cut_after_chunks": cut_after_chunks,
                        "embedding_dim": embedding_dim, "owned_by": owned_by})
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        run_forever(cfg, host, port)

    return mock_worker_command


def run_forever(cfg: MockConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs one worker on uvloop (asyncio if uvloop is missing) until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        worker = await MockWorker(cfg).start(host, port)
        print(f"mock worker {cfg.worker_id} ({cfg.model}) listening on {worker.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
                pass
        await stop.wait()
        await worker.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())


mock_worker_command = _cli_command()


if __name__ == "__main__":  # python -m smg.testing.mock_worker --port N
    sys.exit(mock_worker_command())
