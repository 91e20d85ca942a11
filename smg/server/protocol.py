"""HTTPServerProtocol: the downstream (client-facing) HTTP/1.1 connection.

Theory of operation: ``data_received`` makes one call into the parser per read and
walks the batch of events. A request's body is collected (bounded by
``--max-payload-size``); at its end the route handler runs. A handler either answers
at once (``respond``) or hands the connection to an exchange that streams the worker's
answer and calls ``finish`` when done (``busy`` holds it meanwhile).

Rules:
- Responses leave in request order: while ``busy``, events of pipelined requests wait
  in ``queue`` (reading pauses when it grows past QUEUE_PAUSE events).
- Every error the gateway produces is a JSON body in the API family's format, with
  the request id. After a protocol error the connection is closed.
- A client that hangs up aborts its exchange (which closes the worker connection).
- Timeouts (idle keep-alive, header read, body stall) are checked by the gateway's
  periodic sweep through ``check_timeouts`` — no per-request timer handles.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from smg.api import errors as api_errors
from smg.api.request_id import is_valid, new_id
from smg.errors import RemoteProtocolError
from smg.http1 import writer
from smg.http1.events import Data, EndOfMessage, Request
from smg.http1.parser import RequestParser

log = logging.getLogger("smg.server")

# Pipelined events queued while a response is in progress before reading pauses.
QUEUE_PAUSE = 64



class HTTPServerProtocol(asyncio.Protocol):
    __slots__ = ("gw", "parser", "transport", "queue", "req", "path", "family", "body", "body_len",
                 "rid", "keep", "http11", "busy", "closing", "last_active", "wait_since", "read_paused",
                 "write_paused", "obs", "t0", "method", "status", "error_code", "span", "__weakref__")

    def __init__(self, gw) -> None:
        self.gw = gw
        self.parser = RequestParser(gw.config.max_header_size)
        self.transport = None
        self.queue = None
        self.req = None          # Request whose body is being received
        self.path = b""
        self.family = api_errors.OPENAI
        self.body: list = []
        self.body_len = 0
        self.rid = b""
        self.keep = True         # keep-alive of the request being answered
        self.http11 = True       # that request was HTTP/1.1 (chunked responses allowed)
        self.busy = None         # exchange producing the current response
        self.closing = False
        self.last_active = gw.now
        self.wait_since = gw.now
        self.read_paused = False
        self.write_paused = False
        self.obs = gw.observer      # None when nothing is recorded (e.g. the metrics listener)
        self.t0 = 0.0               # when the current request's head arrived (loop clock)
        self.method = b""
        self.status = 0
        self.error_code = None
        self.span = None

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.gw.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.gw.now
        if self.closing:
            return
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            self._protocol_error(e)
            return
        if events:
            if self.queue:
                self.queue.extend(events)
                self._check_queue()
            else:
                self._handle(events)

    def eof_received(self):
        # A client half-close: finish what is in flight, then close.
        if self.busy is None and not self.queue:
            return False
        self.closing = True
        return True

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.gw.connections.discard(self)
        busy = self.busy
        if busy is not None:
            self.busy = None
            if busy is not True:
                busy.abort()
                if self.obs is not None:
                    self.obs.request_done(self, busy, 499)  # nginx's "client closed request"

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.busy is not None:
            self.busy.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.busy is not None:
            self.busy.resume()

    # -- request events ------------------------------------------------------------

    def _handle(self, events: list) -> None:
        i = 0
        n = len(events)
        while i < n:
            if self.closing:
                return
            ev = events[i]
            t = type(ev)
            if t is Data:
                if self.req is not None:
                    self._on_body(ev.data)
            elif t is EndOfMessage:
                if self.req is not None:
                    self._on_request_end()
            elif t is Request:
                if self.busy is not None:
                    q = self.queue
                    if q is None:
                        q = self.queue = deque()
                    q.extend(events[i:] if i else events)
                    self._check_queue()
                    return
                self._on_request(ev)
            i += 1

    def _check_queue(self) -> None:
        if len(self.queue) > QUEUE_PAUSE and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _on_request(self, req: Request) -> None:
        self.req = req
        self.t0 = self.gw.clock()
        self.method = req.method
        self.error_code = None
        target = req.target
        q = target.find(b"?")
        path = target[:q] if q >= 0 else target
        self.path = path
        self.family = api_errors.ANTHROPIC if path == b"/v1/messages" else api_errors.OPENAI
        rid = None
        best = 1 << 30
        prio = self.gw.request_id_priority  # header name -> rank in --request-id-headers
        for n, v in req.headers:
            p = prio.get(n)
            if p is not None and p < best:
                rid = v
                best = p
        self.rid = rid if rid is not None and is_valid(rid) else new_id(path)
        self.body = []
        self.body_len = 0
        if self.gw.tracing is not None:
            self.span = self.gw.tracing.start(req.method, path, req.headers, self.rid)
        if req.content_length > self.gw.config.max_payload_size:
            self.req = None
            self.reply_error(413, "request body exceeds the maximum payload size", close=True)
            return
        if req.expect_continue and req.content_length != 0:
            self.transport.write(writer.CONTINUE_100)

    def _on_body(self, data: bytes) -> None:
        self.body_len += len(data)
        if self.body_len > self.gw.config.max_payload_size:
            self.req = None
            self.reply_error(413, "request body exceeds the maximum payload size", close=True)
            return
        self.body.append(data)

    def _on_request_end(self) -> None:
        req = self.req
        self.req = None
        self.keep = req.keep_alive
        self.http11 = req.http_version == b"1.1"
        body = self.body
        body = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        self.busy = True  # a handler answering synchronously clears it via finish()
        methods = self.gw.routes.get(self.path)
        if methods is None:
            for prefix, m in self.gw.prefix_routes:
                if self.path.startswith(prefix):
                    methods = m
                    break
        try:
            if methods is None:
                self.reply_error(404, f"no route for {self.path.decode('latin-1')}", code="not_found")
                return
            handler = methods.get(req.method)
            if handler is None:
                allow = b", ".join(sorted(methods))
                self.reply_error(405, f"method {req.method.decode('latin-1')} not allowed",
                                 extra=[(b"allow", allow)])
                return
            handler(self, req, body)
        except Exception:  # a bug in a handler must not take the process down
            log.exception("handler failed for %s (request id %s)", self.path, self.rid.decode())
            if self.busy is True:
                self.reply_error(500, "internal gateway error")
            elif self.busy is not None:
                busy, self.busy = self.busy, None
                busy.abort()
                self.close()

    # -- answering -------------------------------------------------------------------

    def respond(self, status: int, body: bytes, headers: list | None = None,
                close: bool = False, content_type: bytes = b"application/json") -> None:
        """Sends a complete gateway-made response and finishes the exchange."""
        keep = not close and not self.closing and self._keep_alive()
        self.status = status
        hdrs = [(b"content-type", content_type), (b"x-request-id", self.rid)]
        if headers:
            hdrs.extend(headers)
        self.transport.write(writer.response(status, hdrs, body, keep))
        self.finish(keep)

    def reply_error(self, status: int, message: str, code: str | None = None,
                    close: bool = False, extra: list | None = None) -> None:
        """Sends an error response in the request's API family format."""
        self.error_code = code or api_errors.default_code(status)
        self.respond(status, api_errors.error_body(self.family, status, message, code), extra, close)

    def _keep_alive(self) -> bool:
        return self.keep and not self.gw.draining

    def finish(self, keep_alive: bool) -> None:
        """The current response is complete; ``keep_alive`` False closes the connection."""
        busy = self.busy
        self.busy = None
        if self.obs is not None:
            self.obs.request_done(self, busy if busy is not True else None, self.status)
        if not keep_alive or self.closing:
            self.close()
            return
        self.wait_since = self.gw.now
        q = self.queue
        if q:
            events = list(q)
            q.clear()
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            self._handle(events)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _protocol_error(self, e: RemoteProtocolError) -> None:
        status = e.status_hint
        if self.busy is not None:
            # a response is in flight: the bad bytes belong to a later request
            self.closing = True
            return
        self.req = None
        self._fresh(b"")
        self.reply_error(status, f"malformed request: {e}", close=True)

    def _fresh(self, rid_path: bytes) -> None:
        """Context for an answer that belongs to no parsed request."""
        self.t0 = self.gw.clock()
        self.method = b""
        self.path = b""
        self.rid = new_id(rid_path)

    # -- timeouts (called by the gateway sweep) ----------------------------------------

    def check_timeouts(self, now: float, cfg) -> None:
        if self.closing or self.busy is not None:
            return
        if self.req is not None:
            if now - self.last_active > cfg.header_read_timeout_secs:
                self.req = None
                self.busy = True
                self.reply_error(408, "timed out waiting for the request body", close=True)
            return
        if self.parser.buffered:
            if now - self.wait_since > cfg.header_read_timeout_secs:
                self._fresh(b"")
                self.busy = True
                self.reply_error(408, "timed out waiting for the request headers", close=True)
        elif now - self.wait_since > cfg.idle_connection_timeout_secs:
            self.close()
