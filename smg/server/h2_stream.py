"""H2Stream: one HTTP/2 request stream — its request assembly and its response sink.

Theory of operation: the connection (smg/server/h2_connection.py) turns h2 events into
calls here. A request's header block (its fields checked by smg/server/h2_hpack.py)
becomes a ``RequestContext`` (``request_head``: the request-level RFC 9113 checks,
pseudo-headers to method/target, ``:authority`` to ``host``), its route is looked up
and the head stage runs (``Site.on_head``); DATA is collected up to
``--max-payload-size``; at END_STREAM the route's filter chain and handler run
(``Site.serve``) exactly as for HTTP/1.1. The answer comes back through the same
sink methods the HTTP/1.1 connection has (``reply``/``reply_error``, ``send_head``/
``send``/``fail``, ``abort``, ``set_producer``, ``handler_failed``, ``keep_alive``,
``peer``); the filter chain, selection, exchange, upstream legs and observer never
know which protocol they serve.

Rules:
- Body DATA is acknowledged (WINDOW_UPDATE) as the gateway takes it into the request
  buffer, never ahead of it — through h2's window manager, except a body's last frame,
  which reopens only the connection's window, batched per read (the connection's
  ``_give_back``); a body over
  ``--max-payload-size`` is answered 413 and the stream's request side is reset.
  Body bytes are reserved in the site's body budget as on HTTP/1.1, the streams of
  one connection sharing its per-connection share, and released once when the
  stream ends.
- Response DATA is sent within the client's flow-control windows (stream and
  connection) in frames of at most its SETTINGS_MAX_FRAME_SIZE. What cannot go yet is
  held in the stream's backlog; past ``BACKLOG_HIGH`` bytes (or while the connection's
  transport is write-paused) the producer (the exchange → its worker leg) is paused,
  and resumed under ``BACKLOG_LOW``, so a client keeping a window at zero never
  grows gateway memory beyond the bound plus one upstream read, and holds up no
  other stream. While the transport is write-paused, heads wait in their stream too
  (``queued``): a client that reads nothing holds at most one waiting answer per
  open stream. A stream whose output makes no progress for
  ``--http2-zero-window-timeout-secs`` is reset (RST_STREAM CANCEL) and recorded as
  499 (client gone: the worker is not to blame).
- CORS (the site's ``cors``) as on HTTP/1.1: a preflight answered in the 404/405
  branches, the policy's headers on every answer.
- Connection-specific headers (RFC 9113 §8.2.2: ``smg.http1.writer.HOP_BY_HOP`` and
  any a worker's Connection header nominates) are never sent.
- ``fail(event)`` after the head: an SSE answer without a Content-Length gets the
  error event, then END_STREAM — the event is the in-band signal SSE clients (the
  OpenAI SDKs) read, as on HTTP/1.1; any other answer is reset with INTERNAL_ERROR,
  the only way HTTP/2 marks a body incomplete (an END_STREAM would make a truncated
  body look whole).
- A client RST_STREAM (or the connection's loss) aborts the producer — the worker
  leg is closed, the engine stops generating — and a request being answered ends as
  499. ``Site.request_ended`` is called exactly once per request answered.
- ``close=True`` on a reply cuts the request side only: if the client is still
  sending, RST_STREAM NO_ERROR follows the complete response (RFC 9113 §8.1); the
  connection, shared with other streams, stays.
"""
from __future__ import annotations

import logging
from collections import deque

from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError
from h2.exceptions import ProtocolError as H2ProtocolError
from hpack import NeverIndexedHeaderTuple

from smg.api import errors as api_errors
from smg.api.request_id import new_id
from smg.http1 import writer
from smg.server.body_budget import refusal
from smg.server.context import RequestContext
from smg.server.endpoints import UNMATCHED

log = logging.getLogger("smg.server.h2")

HOP_BY_HOP = writer.HOP_BY_HOP
BACKLOG_HIGH = 65536   # response bytes held per stream before its producer is paused
BACKLOG_LOW = 16384    # ... and resumed under this

_HEAD = b"HEAD"
_STATUS = {s: b"%d" % s for s in range(100, 600)}
_CONTINUE = [(b":status", b"100")]
# Values unique to one response (request ids, most body lengths) are sent as literals
# kept out of the HPACK dynamic table: indexing them would only churn it, evicting the
# repeated fields that make compression pay, and cost an insert and an eviction each.
_LITERAL = NeverIndexedHeaderTuple
_RID = b"x-request-id"
_LENGTH = b"content-length"


class BadRequest(Exception):
    """A request head HTTP/2 framing allowed but the gateway cannot serve (400)."""


class Malformed(BadRequest):
    """A request head RFC 9113 §8.1.1 calls malformed (h2's inbound validation is off,
    smg/server/h2_hpack.py): the connection ends with GOAWAY PROTOCOL_ERROR."""


def request_head(headers: list) -> tuple:
    """Splits an h2 request header list (bytes pairs, pseudo-headers first; fields
    checked by ``smg.server.h2_hpack.check_fields``) into ``(method, target, headers,
    content_length, expect_continue)``.

    ``headers`` are the regular fields in order, with ``host`` from ``:authority``
    when the client sent no Host (RFC 9113 §8.3.1), so the pipeline sees what an
    HTTP/1.1 request would carry, and Cookie fields joined into one, last (§8.2.3).
    ``content_length`` is -1 when absent.

    Raises:
        Malformed: no ``:method``; no ``:scheme`` or ``:path`` (outside CONNECT);
            ``:protocol`` outside CONNECT; neither ``:authority`` nor Host, or the
            two differing; more than one Host.
        BadRequest: a Content-Length that is not a decimal integer, or differing copies.
    """
    method = target = authority = scheme = host = cookies = None
    protocol = False
    out = []
    length = -1
    expect = False
    for n, v in headers:
        if n[:1] == b":":
            if n == b":method":
                method = v
            elif n == b":path":
                target = v
            elif n == b":authority":
                authority = v
            elif n == b":scheme":
                scheme = v
            else:
                protocol = True  # :protocol (check_fields lets no other through)
            continue
        if n == b"content-length":
            if not v.isdigit():
                raise BadRequest(f"invalid content-length {v[:40]!r}")
            cl = int(v)
            if length >= 0 and cl != length:
                raise BadRequest("conflicting content-length values")
            length = cl
        elif n == b"host":
            if host is not None:
                raise Malformed("more than one host header")
            host = v
        elif n == b"expect":
            expect = v.lower() == b"100-continue"
        elif n == b"cookie":
            if cookies is None:
                cookies = [v]
            else:
                cookies.append(v)
            continue
        out.append((n, v))
    if method is None:
        raise Malformed("no :method")
    if method == b"CONNECT" and not protocol:
        if scheme is not None or target is not None:
            raise Malformed("CONNECT with :scheme or :path")
    elif scheme is None or target is None:
        raise Malformed("no :scheme or no :path")
    elif protocol and method != b"CONNECT":
        raise Malformed(":protocol outside CONNECT")
    if authority is None:
        if host is None:
            raise Malformed("neither :authority nor host")
    elif host is None:
        out.append((b"host", authority))
    elif host != authority:
        raise Malformed(":authority and host differ")
    if cookies is not None:
        out.append((b"cookie", b"; ".join(cookies)))
    return method, target or b"", out, length, expect


class H2Stream:
    __slots__ = ("conn", "sid", "site", "ctx", "route", "body", "body_len", "producer", "answering", "done",
                 "recv_done", "head", "sized", "backlog", "backlog_len", "end_pending", "paused",
                 "blocked_since", "head_since", "last_data", "body_held", "queued", "__weakref__")

    def __init__(self, conn, sid: int, site) -> None:
        self.conn = conn              # smg.server.h2_connection.H2ServerConnection
        self.sid = sid
        self.site = site
        self.ctx = None
        self.route = None             # the route while the body is received (False: no route)
        self.body: list = []
        self.body_len = 0
        self.producer = None
        self.answering = False        # the request is complete (or refused) and being answered
        self.done = False             # the stream is over for the gateway (ended, reset or lost)
        self.recv_done = False        # the client sent END_STREAM
        self.head = None              # a proxied head not yet sent (goes with the first send)
        self.queued = None            # (headers, end) held while the transport is write-paused
        self.sized = False            # the head carried a Content-Length
        self.backlog: deque = deque()  # response bytes waiting for flow-control window
        self.backlog_len = 0
        self.end_pending = False      # END_STREAM goes with the backlog's last byte
        self.paused = False           # the producer was told to pause
        self.body_held = 0            # body bytes reserved in the site's body budget (released once)
        now = site.now
        self.blocked_since = now      # last progress of a backlogged response
        self.head_since = now
        self.last_data = now

    # -- the request (from the connection) -----------------------------------------------

    def on_request(self, headers: list, ended: bool) -> None:
        site = self.site
        self.recv_done = ended
        try:
            method, target, hdrs, length, expect = request_head(headers)
        except Malformed as e:
            self.conn.malformed(str(e))
            return
        except BadRequest as e:
            self._fresh()
            self.reply_error(400, f"malformed request: {e}", close=True)
            return
        q = target.find(b"?")
        path = target[:q] if q >= 0 else target
        route = site.routes.match(path)
        ctx = self.ctx = RequestContext(method, target, path, hdrs,
                                        route.endpoint if route is not None else UNMATCHED, site.clock())
        site.on_head(ctx)
        self.route = route if route is not None else False
        if length > site.config.max_payload_size:
            self._refuse_body()
            return
        budget = site.body_budget
        if budget is not None and length > 0:
            verdict = budget.admit(self.conn.body_held, length)
            if verdict:
                self._refuse_body(verdict)
                return
        if expect and not ended and length != 0:
            self.conn.h2.send_headers(self.sid, _CONTINUE)
            self.conn.want_flush()

    def on_data(self, data: bytes) -> None:
        """A DATA payload; the connection acknowledges it (reopens the window) after this
        returns, that is once it is in the request buffer."""
        if self.route is None or self.done:
            return  # refused or answered already: the bytes are dropped (the window is still given back)
        site = self.site
        self.last_data = site.now
        n = len(data)
        self.body_len += n
        if self.body_len > site.config.max_payload_size:
            self._refuse_body()
            return
        budget = site.body_budget
        if budget is not None:
            # the connection's streams share one per-connection share of the budget
            conn = self.conn
            verdict = budget.reserve(conn.body_held, n)
            if verdict:
                self._refuse_body(verdict)
                return
            self.body_held += n
            conn.body_held += n
        self.body.append(data)

    def on_end(self) -> None:
        """END_STREAM from the client: the request is complete; run the pipeline."""
        self.recv_done = True
        route = self.route
        if route is None or self.done:
            return
        self.route = None
        ctx = self.ctx
        body = self.body
        ctx.raw = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        del body  # the chunks go now, not when the handler returns
        self.answering = True
        self.site.serve(self, route, ctx)

    def on_reset(self, status: int = 499) -> None:
        """The client reset the stream, or the connection is gone: abort the producer;
        a request being answered ends as ``status``."""
        if self.done:
            return
        self.done = True
        p = self.producer
        self.producer = None
        self.backlog.clear()
        self.backlog_len = 0
        self.queued = None
        if self.body_held:
            self._release_body()
        self.conn.stream_closed(self)
        if self.answering:
            self.answering = False
            if p is not None:
                p.abort()
            ctx = self.ctx
            ctx.status = status
            self.site.request_ended(ctx)

    def _refuse_body(self, verdict: int = 0) -> None:
        """Answers a request whose body will not be read: 413 over ``--max-payload-size``
        (``verdict`` 0), else the body budget's verdict (413 or 503); the client is then
        told to stop sending (RST_STREAM NO_ERROR after the answer)."""
        self.route = None
        self.answering = True
        if self.body_held:
            self._release_body()
        self.body = []
        budget = self.site.body_budget
        status, message, code, extra = refusal(verdict, budget.share if budget is not None else 0)
        self.reply_error(status, message, code=code, close=True, extra=extra)

    def _release_body(self) -> None:
        """Gives this request's reserved body bytes back (once: it zeroes them)."""
        n = self.body_held
        self.body_held = 0
        self.body = []
        self.conn.body_held -= n
        self.site.body_budget.release(n)

    def _fresh(self) -> None:
        """A context for an answer that belongs to no parsed request."""
        self.route = None
        ctx = self.ctx = RequestContext(b"", b"", b"", [], UNMATCHED, self.site.clock())
        ctx.rid = new_id(UNMATCHED.id_prefix)
        self.answering = True

    # -- the response sink ------------------------------------------------------------------

    def set_producer(self, producer) -> None:
        """``producer`` (pause/resume/abort) now produces this stream's response."""
        self.producer = producer
        self.paused = False
        if producer is not None:
            self.sync_pause()

    @property
    def keep_alive(self) -> bool:
        """Whether the connection goes on serving after this response (HTTP/2 streams
        always end on their own; this is False once the connection is going away)."""
        conn = self.conn
        return not conn.closing and conn.goaway_id < 0 and not self.site.draining

    @property
    def peer(self) -> str | None:
        """The client's IP address, as on the HTTP/1.1 connection."""
        return self.conn.peer

    def reply(self, status: int, body: bytes, headers: list | None = None,
              close: bool = False, content_type: bytes = b"application/json") -> None:
        """Sends a complete gateway-made response and ends the stream."""
        if self.done:
            return
        ctx = self.ctx
        ctx.status = status
        hdrs = [(b":status", _STATUS.get(status) or b"%d" % status), (b"content-type", content_type),
                _LITERAL(_RID, ctx.rid)]
        if headers:
            for n, v in headers:
                if n not in HOP_BY_HOP:
                    hdrs.append((n, v))
        cors = self.site.cors
        if cors is not None:
            hdrs.extend(cors.headers(ctx.headers))
        hdrs.append(_LITERAL(_LENGTH, b"%d" % len(body)))
        self.producer = None
        if ctx.method == _HEAD or not body:
            self._send_headers(hdrs, True)
        elif self._send_headers(hdrs, False):
            self._write(body, True)

    def reply_error(self, status: int, message: str, code: str | None = None,
                    close: bool = False, extra: list | None = None, param: str | None = None) -> None:
        """Sends an error response in the request's API family format (``param``: the
        request field to blame); gateway errors also name their code in
        ``x-smg-error-code`` (smg/api/errors.py)."""
        if self.done:
            return
        ctx = self.ctx
        ctx.error_code = code or api_errors.default_code(status)
        h = api_errors.code_header(code, status)
        if h is not None:
            extra = [h, *extra] if extra else [h]
        self.reply(status, api_errors.error_body(ctx.family, status, message, code, param, ctx.rid), extra, close)

    def send_head(self, status: int, headers: list, length: int, skip: frozenset, extra: list | None) -> None:
        """A proxied response head (see the HTTP/1.1 connection): the worker's headers
        less ``skip``, the hop-by-hop set and any its Connection header nominates, then
        ``x-request-id`` and ``extra``; Content-Length when ``length`` >= 0. It leaves
        with the first ``send``."""
        ctx = self.ctx
        ctx.status = status
        hdrs = [(b":status", _STATUS.get(status) or b"%d" % status)]
        cors = self.site.cors
        if cors is not None:
            skip = cors.skip(skip)
        nominated = None
        for n, v in headers:
            if n in skip or n in HOP_BY_HOP:
                if n == b"connection":
                    nominated = writer.connection_tokens(headers)
                continue
            hdrs.append((n, v))
        if nominated:
            hdrs = [h for h in hdrs if h[0] not in nominated]
        hdrs.append(_LITERAL(_RID, ctx.rid))
        if extra:
            for n, v in extra:
                if n not in HOP_BY_HOP:
                    hdrs.append((n, v))
        if cors is not None:
            hdrs.extend(cors.headers(ctx.headers))
        if length >= 0:
            hdrs.append(_LITERAL(_LENGTH, b"%d" % length))
        self.sized = length >= 0
        self.head = hdrs

    def send(self, pieces: list, end: bool) -> None:
        """Body bytes (after the pending head); ``end`` ends the stream."""
        if self.done:
            return
        head = self.head
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if self.ctx.method == _HEAD:
            data = b""
        if head is not None:
            self.head = None
            if not self._send_headers(head, end and not data):
                return
            if end and not data:
                return
        if data or end:
            self._write(data, end)

    def fail(self, event: bytes | None) -> None:
        """The response failed after its head: end it visibly (module rules)."""
        if self.done:
            return
        if event is not None and self.head is None and not self.sized and self.ctx.is_sse:
            self.producer = None
            self._write(event, True)
        else:
            self.abort()

    def abort(self) -> None:
        """Resets the stream (RST_STREAM INTERNAL_ERROR); the request ends here."""
        self._reset(ErrorCodes.INTERNAL_ERROR, "internal_error")

    def handler_failed(self) -> None:
        """A handler or filter raised: answer 500 if nothing was sent, else reset."""
        if not self.answering or self.done:
            return
        p = self.producer
        if p is not None:
            self.producer = None
            p.abort()
        if self.head is None and self.ctx is not None and self.ctx.status == 0:
            self.reply_error(500, "internal gateway error")
        else:
            self.abort()

    # -- writing ------------------------------------------------------------------------

    def pending(self) -> bool:
        """Output is waiting in the stream (a head, DATA or the END_STREAM)."""
        return self.queued is not None or bool(self.backlog) or self.end_pending

    def _hold(self) -> None:
        """Something was queued: the connection's pump will send it."""
        conn = self.conn
        if self.sid not in conn.blocked:
            self.blocked_since = self.site.now  # the stall timer starts when output starts waiting
            conn.block(self)
        self.sync_pause()

    def _send_headers(self, hdrs: list, end: bool) -> bool:
        """HEADERS now, or queued while the transport is write-paused (so that a client
        that reads nothing cannot make the gateway pile up heads). False: the stream is
        gone."""
        conn = self.conn
        if conn.write_paused or self.pending():
            self.queued = (hdrs, end)
            self._hold()
            return True
        try:
            conn.h2.send_headers(self.sid, hdrs, end_stream=end)
        except H2ProtocolError:
            # the stream closed under us (a reset crossing our answer): nothing to send to
            self.on_reset()
            return False
        if end:
            self._finished()
        conn.want_flush()
        return True

    def _write(self, data: bytes, end: bool) -> None:
        """Sends ``data`` as far as the flow-control windows allow; the rest waits in
        the backlog (the connection's pump sends it as windows open)."""
        conn = self.conn
        if conn.write_paused or self.pending():
            if data:
                self.backlog.append(memoryview(data))
                self.backlog_len += len(data)
            if end:
                self.end_pending = True
            self._hold()
            return
        h2 = conn.h2
        sid = self.sid
        n = len(data)
        off = 0
        try:
            if 0 < n <= h2.max_outbound_frame_size:
                # one frame, most answers and events: h2 checks the windows itself, and
                # refuses before changing any state when they are too small
                try:
                    h2.send_data(sid, data, end_stream=end)
                    off = n
                except FlowControlError:
                    pass
            while off < n:
                size = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size, n - off)
                if size <= 0:
                    break
                last = end and off + size == n
                h2.send_data(sid, data if size == n else memoryview(data)[off:off + size], end_stream=last)
                off += size
            if n == 0 and end:
                h2.end_stream(sid)
        except H2ProtocolError:
            self.on_reset()
            return
        conn.want_flush()
        if off < n:
            self.backlog.append(memoryview(data)[off:])
            self.backlog_len += n - off
            self.end_pending = end
            self._hold()
        elif end:
            self._finished()

    def push(self, budget: int) -> int:
        """Sends what waits, one frame's worth (at most ``budget`` DATA bytes): a queued
        head, then DATA within the windows, with END_STREAM on the last. Returns the
        progress made (bytes, or 1 for a head or a bare END_STREAM), 0 when the windows
        are shut. Called by the connection's pump."""
        h2 = self.conn.h2
        sid = self.sid
        backlog = self.backlog
        progress = 0
        try:
            head = self.queued
            if head is not None:
                self.queued = None
                h2.send_headers(sid, head[0], end_stream=head[1])
                if head[1]:
                    self._finished()
                    return 1
                progress = 1
            if not backlog:
                if self.end_pending:
                    h2.end_stream(sid)
                    self._finished()
                    return 1
                return progress
            size = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size, budget)
            if size <= 0:
                return progress
            chunk = backlog[0]
            if len(chunk) <= size:
                backlog.popleft()
                size = len(chunk)
                piece = chunk
            else:
                piece = chunk[:size]
                backlog[0] = chunk[size:]
            self.backlog_len -= size
            last = self.end_pending and not backlog
            h2.send_data(sid, piece, end_stream=last)
        except H2ProtocolError:
            self.on_reset()
            return 0
        self.blocked_since = self.site.now
        if last:
            self._finished()
        elif self.paused:
            self.sync_pause()
        return size

    def sync_pause(self) -> None:
        """Pauses or resumes the producer for the backlog and the transport (hysteresis
        between ``BACKLOG_HIGH`` and ``BACKLOG_LOW``)."""
        p = self.producer
        if p is None:
            return
        if self.paused:
            if not self.conn.write_paused and self.backlog_len < BACKLOG_LOW:
                self.paused = False
                p.resume()
        elif self.conn.write_paused or self.backlog_len > BACKLOG_HIGH:
            self.paused = True
            p.pause()

    def _reset(self, code, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.producer = None
        self.backlog.clear()
        self.backlog_len = 0
        self.queued = None
        if self.body_held:
            self._release_body()
        conn = self.conn
        conn.reset_stream(self.sid, code, reason)
        conn.stream_closed(self)
        if self.answering:
            self.answering = False
            self.site.request_ended(self.ctx)

    def _finished(self) -> None:
        """END_STREAM went out: the response is complete."""
        if self.done:
            return
        self.done = True
        self.producer = None
        if self.body_held:
            self._release_body()
        conn = self.conn
        if not self.recv_done:
            # answered before the request ended (413, 408, an early error): ask the
            # client to stop sending (RFC 9113 §8.1)
            conn.reset_stream(self.sid, ErrorCodes.NO_ERROR)
        conn.stream_closed(self)
        if self.answering:
            self.answering = False
            self.site.request_ended(self.ctx)

    # -- timeouts (from the connection's sweep) ---------------------------------------

    def check_timeouts(self, now: float, cfg) -> None:
        if self.done:
            return
        if self.route is not None and not self.recv_done:
            # receiving a body: it must keep coming, at a minimum average rate
            limit = cfg.header_read_timeout_secs
            if now - self.last_data > limit or now - self.head_since > limit + self.body_len / cfg.body_read_min_rate:
                self.route = None
                self.answering = True
                self.reply_error(408, "timed out waiting for the request body", close=True)
            return
        if self.pending() and now - self.blocked_since > cfg.http2_zero_window_timeout_secs:
            # the client keeps this stream's window shut (or reads nothing): give up on it
            self.conn.reset_stream(self.sid, ErrorCodes.CANCEL, "zero_window")
            self.on_reset()
