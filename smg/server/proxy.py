"""ProxyExchange: one request forwarded to a worker and its answer streamed back.

Theory of operation: ``start`` takes a pooled connection (or opens one), writes the
request head and buffered body in one write, and registers the request deadline.
Each batch of response events is turned into downstream bytes and written in one
write. The response is re-framed for the client (Content-Length passes through,
anything else is chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0).

Rules:
- ``finished`` is set exactly once, on every path (complete, error, timeout, client
  gone); the worker's in-flight count is decremented there and nowhere else.
- A worker connection is pooled again only after a complete response it allows to be
  kept alive; on any other end it is aborted, which is how an engine learns that the
  generation is no longer wanted.
- Backpressure: when the client's transport is full, reading from the worker pauses.
- A reused pooled connection that dies before any response byte is retried once on a
  fresh connection (the worker closed it while idle; the request never reached it).
"""
from __future__ import annotations

import logging

import orjson

from smg.http1 import writer
from smg.http1.events import Data, EndOfMessage, Response

log = logging.getLogger("smg.proxy")

_SKIP_RESPONSE = writer.HOP_BY_HOP | {b"x-request-id"}
_SSE = b"text/event-stream"


class ProxyExchange:
    __slots__ = ("gw", "proto", "worker", "policy", "method", "request_bytes", "conn",
                 "connect_task", "timer_key", "finished", "head_sent", "chunked",
                 "close_delimited", "upstream_keep", "is_sse", "retried", "paused")

    def __init__(self, gw, proto, worker, policy, method: bytes, request_bytes: bytes) -> None:
        self.gw = gw
        self.proto = proto
        self.worker = worker
        self.policy = policy
        self.method = method
        self.request_bytes = request_bytes
        self.conn = None
        self.connect_task = None
        self.timer_key = 0
        self.finished = False
        self.head_sent = False
        self.chunked = False
        self.close_delimited = False
        self.upstream_keep = False
        self.is_sse = False
        self.retried = False
        self.paused = False

    # -- dispatch ----------------------------------------------------------------------

    def start(self) -> None:
        gw = self.gw
        self.worker.inflight += 1
        self.proto.busy = self
        self.timer_key = gw.timers.add(self, gw.now + gw.config.request_timeout_secs)
        conn = self.worker.pool.take()
        if conn is None:
            self.connect_task = self.worker.pool.connect(self._on_connected)
        else:
            self.conn = conn
            conn.send(self, self.request_bytes, self.method)

    def _on_connected(self, conn, err) -> None:
        self.connect_task = None
        if self.finished:
            if conn is not None:
                self.worker.pool.put(conn)
            return
        if err is not None:
            self._fail(err.status_hint, f"worker {self.worker.url} unreachable: {err}")
            return
        self.conn = conn
        if self.paused:
            conn.pause_reading()
        conn.send(self, self.request_bytes, self.method)

    # -- worker → client -------------------------------------------------------------

    def on_upstream_events(self, events: list) -> None:
        if self.finished:
            return
        out = []
        done = False
        chunked = self.chunked
        for ev in events:
            t = type(ev)
            if t is Data:
                d = ev.data
                if chunked:
                    out.append(b"%x\r\n" % len(d))
                    out.append(d)
                    out.append(b"\r\n")
                else:
                    out.append(d)
            elif t is Response:
                out.append(self._response_head(ev))
                chunked = self.chunked
            elif t is EndOfMessage:
                if chunked:
                    out.append(writer.LAST_CHUNK)
                done = True
                break
            # InformationalResponse: a worker's 1xx is not relayed (the gateway already
            # answered any Expect: 100-continue itself)
        transport = self.proto.transport
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if done:
            self._complete()

    def _response_head(self, ev: Response) -> bytes:
        self.head_sent = True
        self.upstream_keep = ev.keep_alive
        parts = [writer.status_line(ev.status_code)]
        skip = _SKIP_RESPONSE
        for n, v in ev.headers:
            if n in skip:
                if n == b"connection" and v.lower() not in (b"close", b"keep-alive"):
                    skip = skip | writer.connection_tokens(ev.headers)
                continue
            if n == b"content-type" and v.startswith(_SSE):
                self.is_sse = True
            parts.append(b"%s: %s\r\n" % (n, v))
        proto = self.proto
        parts.append(b"x-request-id: %s\r\n" % proto.rid)
        if not ev.chunked and ev.content_length >= 0:
            parts.append(b"content-length: %d\r\n" % ev.content_length)
        elif proto.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self.chunked = True
        else:
            self.close_delimited = True
        if self.close_delimited or not proto._keep_alive():
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.gw.on_upstream_status(ev.status_code)
        return b"".join(parts)

    def on_upstream_error(self, err) -> None:
        if self.finished:
            return
        conn = self.conn
        self.conn = None
        if not self.head_sent:
            if conn is not None and conn.reused and not conn.got_bytes and not self.retried:
                self.retried = True
                self.connect_task = self.worker.pool.connect(self._on_connected)
                return
            self._fail(err.status_hint, f"worker {self.worker.url} failed: {err}")
            return
        self._cut(f"worker {self.worker.url} failed mid-response: {err}")

    # -- endings ---------------------------------------------------------------------

    def _finish(self, ok: bool) -> None:
        self.finished = True
        self.gw.timers.remove(self, self.timer_key)
        w = self.worker
        w.inflight -= 1
        w.processed += 1
        self.policy.on_complete(w, ok)

    def _complete(self) -> None:
        self._finish(True)
        conn = self.conn
        self.conn = None
        if conn is not None:
            if self.upstream_keep:
                self.worker.pool.put(conn)
            else:
                conn.abort()
        self.proto.finish(not self.close_delimited and self.proto._keep_alive())

    def _drop_upstream(self) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()

    def _fail(self, status: int, message: str) -> None:
        """Fails before anything was sent to the client: an error response."""
        self._finish(False)
        self._drop_upstream()
        log.warning("request %s: %s", self.proto.rid.decode(), message)
        self.proto.reply_error(status, message, code="upstream_timeout" if status == 504 else None)

    def _cut(self, message: str) -> None:
        """Fails after the response head went out: end the stream visibly, then close."""
        self._finish(False)
        self._drop_upstream()
        log.warning("request %s: %s", self.proto.rid.decode(), message)
        proto = self.proto
        if self.is_sse and self.chunked:
            event = b"data: " + orjson.dumps(
                {"error": {"message": message, "type": "api_error", "code": "upstream_error"}}) + b"\n\n"
            proto.transport.write(writer.chunk(event) + writer.LAST_CHUNK)
            proto.finish(False)
        else:
            # without a way to mark the body incomplete in-band, an abort is the signal
            proto.busy = None
            proto.closing = True
            proto.transport.abort()

    def abort(self) -> None:
        """The client went away: stop the worker at once."""
        if self.finished:
            return
        self._finish(False)
        self._drop_upstream()

    def on_timeout(self) -> None:
        if self.finished:
            return
        if self.head_sent:
            self._cut("upstream request timed out")
        else:
            self._fail(504, f"worker {self.worker.url} did not answer within the request timeout")

    # -- backpressure -------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        if self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.conn is not None:
            self.conn.resume_reading()
