"""ProxyExchange: one request forwarded to a worker and its answer streamed back.

Theory of operation: ``start`` dispatches the first attempt: take a pooled
connection (or open one), write the request head and buffered body in one write.
Each batch of response events is turned into downstream bytes and written in one
write. The response is re-framed for the client (Content-Length passes through,
anything else is chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0).

Attempts and retries: while nothing has been sent to the client, a transport error
or a retryable status (408/429/500/502/503/504) ends the attempt and, if the retry
policy allows another, a new attempt runs after the backoff with a freshly selected
worker. The last attempt's worker answer is relayed as it is.

Rules:
- Every attempt ends exactly once (``_end_attempt``): the worker's in-flight count is
  decremented there and nowhere else, and the outcome goes to the policy and the
  worker's circuit breaker (a client hanging up is nobody's failure).
- ``finished`` is set exactly once, on every path (complete, error, timeout, client
  gone); the request deadline spans all attempts.
- A worker connection is pooled again only after a complete response it allows to be
  kept alive; on any other end it is aborted, which is how an engine learns that the
  generation is no longer wanted.
- Backpressure: when the client's transport is full, reading from the worker pauses.
- A reused pooled connection that dies before any response byte is re-sent once on a
  fresh connection without counting as an attempt (the worker closed it while idle).
"""
from __future__ import annotations

import logging

import orjson

from smg.errors import RemoteProtocolError
from smg.http1 import writer
from smg.http1.events import Data, EndOfMessage, Response
from smg.server.forward import upstream_head
from smg.streaming.sse import SSEScanner

log = logging.getLogger("smg.proxy")

_SKIP_RESPONSE = writer.HOP_BY_HOP | {b"x-request-id"}
_SSE = b"text/event-stream"
# Non-streamed bodies up to this size are parsed at the end for their ``usage``.
USAGE_BODY_LIMIT = 1 << 20
_GENERATIVE = frozenset({b"/v1/chat/completions", b"/v1/completions", b"/generate", b"/v1/messages"})


class ProxyExchange:
    __slots__ = ("gw", "proto", "worker", "policy", "method", "target", "headers", "body", "route_req",
                 "request_bytes", "conn", "connect_task", "timer_key", "finished", "head_sent", "chunked",
                 "close_delimited", "upstream_keep", "is_sse", "resent", "paused", "attempt",
                 "in_attempt", "retry_handle", "retries_left",
                 # what the observer records
                 "model", "proto_path", "observe", "scanner", "body_parts", "bytes_out", "upstream_status",
                 "error_type", "dispatch_t")

    def __init__(self, gw, proto, worker, policy, req, body: bytes, route_req=None,
                 model: str | None = None) -> None:
        self.gw = gw
        self.proto = proto
        self.worker = worker
        self.policy = policy
        self.method = req.method
        self.target = req.target
        self.headers = req.headers
        self.body = body
        self.route_req = route_req
        self.request_bytes = b""
        self.conn = None
        self.connect_task = None
        self.timer_key = 0
        self.finished = False
        self.head_sent = False
        self.chunked = False
        self.close_delimited = False
        self.upstream_keep = False
        self.is_sse = False
        self.resent = False
        self.paused = False
        self.attempt = 0
        self.in_attempt = False
        self.retry_handle = None
        # retries need the selection inputs and a body small enough to have been kept
        self.retries_left = route_req is not None and len(body) <= gw.config.max_buffered_request_bytes
        self.model = model
        self.proto_path = proto.path
        # TTFT/TPOT and token usage feed both the metrics and the access line
        self.observe = (gw.metrics is not None or gw.access_log is not None) and proto.path in _GENERATIVE
        self.scanner = None
        self.body_parts = None
        self.bytes_out = 0
        self.upstream_status = 0
        self.error_type = None
        self.dispatch_t = 0.0

    # -- dispatch ----------------------------------------------------------------------

    def start(self) -> None:
        gw = self.gw
        self.proto.busy = self
        self.timer_key = gw.timers.add(self, gw.now + gw.config.request_timeout_secs)
        if gw.config.expose_overhead_header:
            self.dispatch_t = gw.clock()
        self._dispatch()

    def _dispatch(self) -> None:
        w = self.worker
        w.inflight += 1
        self.in_attempt = True
        proto = self.proto
        trace = self.gw.tracing.inject(proto.span) if proto.span is not None else None
        body = self.body
        if w.dp_rank is not None and self.route_req is not None:
            # DP-aware: the rank this logical worker stands for goes into the JSON body
            body = orjson.dumps(dict(self.route_req.body, data_parallel_rank=w.dp_rank))
        self.request_bytes = upstream_head(self.method, self.target, w, proto.rid, self.headers,
                                           len(body), trace) + body
        conn = w.pool.take()
        if conn is None:
            self.connect_task = w.pool.connect(self._on_connected)
        else:
            self.conn = conn
            if self.paused:
                conn.pause_reading()
            conn.send(self, self.request_bytes, self.method)

    def _on_connected(self, conn, err) -> None:
        self.connect_task = None
        if self.finished or not self.in_attempt:
            if conn is not None:
                self.worker.pool.put(conn)
            return
        if err is not None:
            self._attempt_failed(None, "connect_timeout" if err.status_hint == 504 else "connect_failed",
                                 err.status_hint, f"worker {self.worker.url} unreachable: {err}")
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
        parts = self.body_parts  # a non-streamed body kept for its usage (None: not kept)
        done = False
        chunked = self.chunked
        for ev in events:
            t = type(ev)
            if t is Data:
                d = ev.data
                self.bytes_out += len(d)
                if parts is not None:
                    parts.append(d)
                if chunked:
                    out.append(b"%x\r\n" % len(d))
                    out.append(d)
                    out.append(b"\r\n")
                else:
                    out.append(d)
            elif t is Response:
                st = ev.status_code
                if self.retries_left and st in self.gw.retry.retryable_status and self._can_retry(st):
                    self._attempt_failed(st, None, st, f"worker {self.worker.url} answered {st}")
                    return
                out.append(self._response_head(ev))
                chunked = self.chunked
                parts = self.body_parts
            elif t is EndOfMessage:
                if chunked:
                    out.append(writer.LAST_CHUNK)
                done = True
                break
            # InformationalResponse: a worker's 1xx is not relayed (the gateway already
            # answered any Expect: 100-continue itself)
        if out:
            self.proto.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self.scanner is not None:
            # one native call per read, however many events it carried: the scanner takes
            # the Data events' payloads itself and keeps first/last event times and the
            # last data value
            try:
                self.scanner.observe(events)
            except RemoteProtocolError as e:
                # only the observation failed (an event over the scanner's size limit):
                # the bytes are relayed verbatim, so the answer goes on, untimed
                log.info("request %s: stream no longer observed: %s", self.proto.rid.decode(), e)
                self.scanner = None
        if done:
            self._complete()

    def _response_head(self, ev: Response) -> bytes:
        self.head_sent = True
        self.upstream_keep = ev.keep_alive
        self.upstream_status = self.proto.status = ev.status_code
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
        gw = self.gw
        if self.observe:
            if self.is_sse:
                self.scanner = SSEScanner()
            elif 0 <= ev.content_length <= USAGE_BODY_LIMIT and ev.status_code == 200:
                self.body_parts = []
        cfg = gw.config
        if cfg.expose_overhead_header:
            parts.append(b"x-smg-overhead-ms: %.3f\r\n" % ((self.dispatch_t - proto.t0) * 1000))
        if cfg.expose_worker_header:
            parts.append(b"x-smg-worker: %s\r\n" % self.worker.url.encode())
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
        return b"".join(parts)

    def on_upstream_error(self, err) -> None:
        if self.finished:
            return
        conn = self.conn
        self.conn = None
        if not self.head_sent:
            if conn is not None and conn.reused and not conn.got_bytes and not self.resent:
                # the worker closed an idle pooled connection as we reused it: send again
                self.resent = True
                self.connect_task = self.worker.pool.connect(self._on_connected)
                return
            kind = "upstream_protocol" if "malformed" in str(err) else "upstream_closed"
            self._attempt_failed(None, kind, err.status_hint, f"worker {self.worker.url} failed: {err}")
            return
        self.error_type = "upstream_closed_mid_response"
        self._cut(f"worker {self.worker.url} failed mid-response: {err}")

    # -- attempts and retries ---------------------------------------------------------

    def _can_retry(self, status_or_none) -> bool:
        return self.gw.retry.should_retry(self.attempt, status_or_none)

    def _end_attempt(self, ok: bool | None) -> None:
        """Ends the current attempt exactly once; ``ok`` None = no verdict on the worker."""
        if not self.in_attempt:
            return
        self.in_attempt = False
        w = self.worker
        w.inflight -= 1
        w.processed += 1
        self.policy.on_complete(w, bool(ok))
        if ok is not None:
            self.gw.record_outcome(w, ok)

    def _attempt_failed(self, status, kind: str | None, fail_status: int, message: str) -> None:
        """The attempt failed before anything reached the client: retry or give up."""
        self._end_attempt(False)
        self._drop_upstream()
        gw = self.gw
        if self.retries_left and self._can_retry(status):
            delay = gw.retry.delay(self.attempt)
            self.attempt += 1
            gw.on_retry(self, delay)
            log.info("request %s: %s; retry %d in %.3f s", self.proto.rid.decode(), message, self.attempt, delay)
            self.retry_handle = gw.loop.call_later(delay, self._retry)
            return
        if self.attempt:
            gw.on_retries_exhausted(self)
        self.error_type = kind or f"upstream_{status}"
        self._fail(fail_status, message)

    def _retry(self) -> None:
        self.retry_handle = None
        if self.finished:
            return
        gw = self.gw
        registry = gw.registry
        failed = self.worker
        workers = registry.candidates(self.model) or registry.fallback(self.model)
        if len(workers) > 1 and failed in workers:
            workers = [w for w in workers if w is not failed]  # not the one that just failed
        worker = self.policy.select(workers, self.route_req) if workers else None
        if worker is None:
            if self._can_retry(None):
                # nobody to try right now: wait one more backoff (workers come back)
                delay = gw.retry.delay(self.attempt)
                self.attempt += 1
                self.retry_handle = gw.loop.call_later(delay, self._retry)
                return
            self.error_type = "no_healthy_workers"
            self._fail(503, "no healthy worker is available for a retry")
            return
        self.worker = worker
        self.resent = False
        self._dispatch()

    # -- endings ---------------------------------------------------------------------

    def _finish(self) -> None:
        self.finished = True
        self.gw.timers.remove(self, self.timer_key)
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None

    def _complete(self) -> None:
        self._end_attempt(self.upstream_status not in self.gw.retry.retryable_status)
        self._finish()
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
        self._end_attempt(False)
        self._finish()
        self._drop_upstream()
        log.warning("request %s: %s", self.proto.rid.decode(), message)
        self.proto.reply_error(status, message, code="upstream_timeout" if status == 504 else None)

    def _cut(self, message: str) -> None:
        """Fails after the response head went out: end the stream visibly, then close."""
        self._end_attempt(False)
        self._finish()
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
        self.error_type = "client_disconnected"
        self._end_attempt(None)
        self._finish()
        self._drop_upstream()

    def on_timeout(self) -> None:
        if self.finished:
            return
        self.error_type = "upstream_timeout"
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
