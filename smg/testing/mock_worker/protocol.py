"""``MockProtocol``: one per accepted connection; parsing, ordering and writing answers.

Rules:
- Bytes go to smg's own ``RequestParser`` (the native twin when built), one ``feed``
  per network read; each complete request is answered in arrival order (keep-alive
  and pipelining).
- An answer is written either inline in ``data_received`` (no delay, no failure
  injection: the canned fast path) or by a task (delays, a stream the transport
  pushes back on, a hang). While a task owns the connection (``busy``), later requests
  wait in ``queue``; reading pauses once ``QUEUE_PAUSE`` of them are waiting.
- Whoever takes the connection with ``begin`` gives it back with ``release`` (an answer
  cut on purpose) or ``finish`` (an answer complete: the queue runs on); a client that
  hangs up first is counted in ``stats.cancelled`` (stream) or ``stats.aborted``.
- Per request, ``rid`` (the request's ``x-request-id``) and ``keep`` are set before the
  handler runs; ``extra`` is the same two rendered as header lines for templates.
  Plain answers leave through ``respond`` (``smg.http1.writer.response``).
- EOF is taken as the client going away (as gateways and engines do): answers already
  written are flushed, one still in progress is dropped.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson

from smg.errors import RemoteProtocolError
from smg.http1.events import Data, Request
from smg.http1.parser import RequestParser
from smg.http1.writer import CONTINUE_100, response
from smg.testing.mock_worker.errors import anthropic_error, openai_error
from smg.testing.mock_worker.wire import CONNECTION_CLOSE, header_line

QUEUE_PAUSE = 32  # pipelined requests queued behind a slow one before we stop reading

_dumps = orjson.dumps


class MockProtocol(asyncio.Protocol):
    __slots__ = ("w", "transport", "parser", "req", "body", "queue", "busy", "streaming", "paused",
                 "drain", "task", "closed", "extra", "rid", "keep")

    def __init__(self, worker: Any) -> None:
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
        self.rid: bytes | None = None
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
                self.protocol_error(e)
            return
        for ev in events:
            t = type(ev)
            if t is Data:
                self.body.append(ev.data)
            elif t is Request:
                self.req = ev
                if ev.expect_continue and not self.busy and not self.queue:
                    self.transport.write(CONTINUE_100)
            else:  # EndOfMessage
                body = self.body
                body = (body[0] if len(body) == 1 else b"".join(body)) if body else b""
                self.body = []
                if self.busy or self.queue:
                    self.queue.append((self.req, body))
                    if len(self.queue) == QUEUE_PAUSE:
                        self.transport.pause_reading()
                else:
                    self.handle(self.req, body)
                if self.closed or self.transport.is_closing():
                    return

    def eof_received(self) -> bool:
        return False  # the client went away: see the module docstring

    # -- one request

    def handle(self, req: Request, body: bytes) -> None:
        target = req.target
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        route = self.w.routes.get(path)
        rid = None
        for name, value in req.headers:
            if name == b"x-request-id":
                rid = value
                break
        keep = req.keep_alive
        extra = b"" if rid is None else header_line(b"x-request-id", rid)
        if not keep:
            extra += CONNECTION_CLOSE
        self.extra = extra
        self.rid = rid
        self.keep = keep
        w = self.w
        if not path.startswith(b"/_mock/"):
            st = w.stats
            st.requests += 1
            key = path.decode("latin-1")
            paths = st.paths
            paths[key] = paths.get(key, 0) + 1
        if route is None:
            self.error(404, f"no route for {path.decode('latin-1')}")
            return
        handler = route.get(req.method)
        if handler is None:
            allow = b", ".join(sorted(route))
            self.respond(405, openai_error(405, f"method {req.method.decode('latin-1')} not allowed"),
                         [(b"allow", allow)])
            return
        if w._tmpl_version != w.config._version:
            w._reset_templates()
        handler(self, req, body)

    def done(self) -> None:
        """The current answer was written completely."""
        if not self.keep:
            self.transport.close()

    def respond(self, status: int, body: bytes, headers: list | None = None,
                ctype: bytes = b"application/json") -> None:
        """Writes a whole Content-Length answer (``headers``: extra (bytes, bytes) pairs)."""
        hdrs = [(b"content-type", ctype), (b"x-mock-worker", self.w._wid)]
        if headers:
            hdrs += headers
        if self.rid is not None:
            hdrs.append((b"x-request-id", self.rid))
        self.transport.write(response(status, hdrs, body, self.keep))
        self.done()

    def json(self, obj: Any, status: int = 200) -> None:
        self.respond(status, _dumps(obj))

    def error(self, status: int, message: str, anthropic: bool = False) -> None:
        self.respond(status, anthropic_error(status, message) if anthropic else openai_error(status, message))

    def protocol_error(self, e: RemoteProtocolError) -> None:
        self.extra = CONNECTION_CLOSE
        self.rid = None
        self.keep = False
        self.error(e.status_hint, str(e))

    # -- a task owning the answer

    def begin(self, streaming: bool) -> None:
        self.busy = True
        self.streaming = streaming
        self.w._inflight += 1

    def release(self) -> None:
        """The task that owned the answer no longer does (it finished, or cut on purpose)."""
        if self.busy:
            self.busy = False
            self.streaming = False
            self.w._inflight -= 1
        self.task = None

    def finish(self) -> None:
        """The task that owned the answer is done: resume the pipeline."""
        self.release()
        if self.closed:
            return
        self.done()
        self.run_queue()

    def run_queue(self) -> None:
        queue = self.queue
        while queue and not self.busy and not self.closed and not self.transport.is_closing():
            req, body = queue.popleft()
            if req is None:
                self.protocol_error(body)
                return
            self.handle(req, body)
        if not self.closed and len(queue) < QUEUE_PAUSE and not self.transport.is_closing():
            self.transport.resume_reading()
