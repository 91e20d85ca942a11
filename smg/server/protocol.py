"""HTTPServerProtocol: the downstream (client-facing) HTTP/1.1 connection, and the
response sink of the request it is answering.

Theory of operation: ``data_received`` makes one call into the parser per read and
walks the batch of events. A request head creates its ``RequestContext`` and finds
its route in the endpoint table; the body is collected (bounded by
``--max-payload-size``); at its end the route's filter chain and handler run
(``Site.serve``). The answer comes back through the sink methods below, from a
gateway handler (``reply``) or from an exchange streaming a worker's answer
(``send_head`` / ``send`` / ``fail``); the producer (the exchange, or a request
parked in the filter chain) is told when the client is slow (``pause``/``resume``)
and when it is gone (``abort``).

Rules:
- This class is the only code that writes client bytes or reads the connection's
  state; the pipeline talks to it through the sink methods alone (a later HTTP/2
  stream implements the same methods).
- Responses leave in request order: while a response is in progress, events of
  pipelined requests wait in ``queue`` (reading pauses when it grows past
  ``--pipeline-queue-limit`` events).
- Re-framing: a worker's Content-Length passes through; any other body is chunked
  for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones. Hop-by-hop headers
  (RFC 9110 §7.6.1, including those the Connection header nominates, wherever it
  stands) never pass.
- Every error the gateway produces is a JSON body in the API family's format, with
  the request id. After a protocol error the connection is closed.
- A client that leaves — RST, or a FIN while its request is still being answered —
  aborts the producer at once, which closes the worker connection (how an engine
  learns to stop); the request is recorded as 499.
- Timeouts are checked by the gateway's periodic sweep through ``check_timeouts``: a
  request head must arrive within ``--header-read-timeout-secs`` of its first byte, a
  body must keep coming (same timeout between reads) and average at least
  ``--body-read-min-rate`` bytes/s once that timeout has passed, and an idle
  keep-alive connection is closed after ``--idle-connection-timeout-secs``.
- Request-body bytes are reserved in the site's ``body_budget`` as they arrive
  (smg/server/body_budget.py) and released once, when their request ends or the
  connection closes; a body over the budget is answered 413 (it can never fit) or 503
  (retry later). An answer given before the body was read (413, 503) half-closes the
  connection and reads on, discarding, for a bounded time (RFC 9112 §9.6; nginx's
  lingering close), so that the client, still sending, can read it instead of a reset.
- CORS (the site's ``cors``, smg/server/cors.py): a preflight is answered before the
  route and its methods are looked at; every answer carries the policy's headers.
  With CORS off, none of this costs anything: the checks sit in the 404/405 branches
  and behind one ``is None`` test per answer.
- Over TLS the listener's protocol is ``TLSServerProtocol``: once the handshake is
  done, a connection whose ALPN chose ``h2`` is handed to the HTTP/2 server
  connection (smg/server/h2_connection.py); any other stays here. The plain-TCP
  listener never looks at ALPN, but a connection whose first read opens with the
  HTTP/2 connection preface (h2c with prior knowledge, RFC 9113 §3.3) is handed over
  the same way; the test is made on the first read only.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from smg.api import errors as api_errors
from smg.api.request_id import new_id
from smg.errors import RemoteProtocolError
from smg.http1 import writer
from smg.http1.events import Data, EndOfMessage, Request
from smg.http1.framing import chunked
from smg.http1.heads import header_lines
from smg.http1.parser import RequestParser
from smg.server.body_budget import refusal
from smg.server.context import RequestContext
from smg.server.endpoints import UNMATCHED

log = logging.getLogger("smg.server")

_HEAD = b"HEAD"
# pieces of send_head's lines (joined once; cheaper than bytes % tuple per line)
_RID_COLON = b"x-request-id: "
_CRLF = b"\r\n"
_NOTHING: frozenset = frozenset()
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Lingering close after an early answer (nginx's lingering_time and lingering_timeout):
# read and discard for at most this long, and stop once the client pauses this long.
LINGER_MAX_SECS = 30.0
LINGER_IDLE_SECS = 5.0
_ABSOLUTE = (b"http://", b"https://")


def origin_form(target: bytes) -> bytes:
    """An absolute-form target (RFC 9112 §3.2.2) made origin-form: ``http://h/p?q`` → ``/p?q``."""
    i = target.find(b"/", target.find(b"://") + 3)
    return target[i:] if i >= 0 else b"/"


class HTTPServerProtocol(asyncio.Protocol):
    protocol = "http/1.1"  # the metrics' protocol label (HTTP/2: smg/server/h2_connection.py)

    __slots__ = ("site", "parser", "transport", "queue", "ctx", "route", "body", "body_len", "producer",
                 "answering", "closing", "last_active", "wait_since", "head_since", "read_paused", "write_paused",
                 "chunked", "close_delimited", "pending_head", "body_held", "linger", "__weakref__")

    def __init__(self, site) -> None:
        self.site = site
        self.parser = RequestParser(site.config.max_header_size)
        self.transport = None
        self.queue = None
        self.ctx = None            # context of the request being received or answered
        self.route = None          # its route (None: no request, or its body is being refused)
        self.body: list = []
        self.body_len = 0
        self.producer = None       # exchange (or parked filter chain) producing the answer
        self.answering = False     # a request is complete and its response not yet finished
        self.closing = False
        now = site.now
        self.last_active = now
        self.wait_since = now      # when the connection became idle (keep-alive timer)
        self.head_since = 0.0      # when the first byte of the request head being read arrived
        self.read_paused = False
        self.write_paused = False
        self.chunked = False       # the response being sent is chunked
        self.close_delimited = False
        self.pending_head = None   # a proxied head not yet written (goes out with the first data)
        self.body_held = 0         # body bytes reserved in the site's body budget for the current request
        self.linger = 0.0          # < 0: linger when closing; > 0: lingering until then (loop clock)

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.site.connections.add(self)

    def data_received(self, data: bytes) -> None:
        now = self.last_active = self.site.now
        if self.closing:
            return
        parser = self.parser
        if self.ctx is None and not parser.buffered:
            # head_since is 0 only before the first read: the HTTP/2 preface test runs once
            if not self.head_since and data[:4] == b"PRI " and self._to_http2(data):
                return
            self.head_since = now  # the header timer starts with the head's first byte
        try:
            events = parser.feed(data)
        except RemoteProtocolError as e:
            self._protocol_error(e)
            return
        if events:
            if self.queue:
                self.queue.extend(events)
                self._check_queue()
            else:
                self._handle(events)

    def _to_http2(self, data: bytes) -> bool:
        """A first read that opens with the HTTP/2 connection preface (prior knowledge,
        RFC 9113 §3.3; h2c): the connection is handed to the HTTP/2 server connection."""
        n = min(len(data), len(_H2_PREFACE))
        if data[:n] != _H2_PREFACE[:n]:
            return False
        from smg.server.h2_connection import H2ServerConnection

        self.closing = True
        self.site.connections.discard(self)
        H2ServerConnection(self.site, self.transport, data)  # takes the transport over
        return True

    def drain(self) -> None:
        """Shutdown: an idle connection closes now; one answering closes after its
        response (``keep_alive`` is False while the site drains)."""
        if not self.answering and self.ctx is None:
            self.close()

    def eof_received(self):
        if not self.answering and self.ctx is None and not self.queue:
            return False  # nothing in flight: let the transport close
        # A FIN while a request is being received or answered: the client has left
        # (HTTP/1.1 has no half-close semantics a proxy can rely on, and an engine
        # generating for nobody wastes a GPU), so the request ends now as a 499.
        self._client_gone()
        self.close()
        return True

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.site.connections.discard(self)
        self._client_gone()

    def _client_gone(self) -> None:
        if self.body_held:
            self._release_body()
        p = self.producer
        ctx = self.ctx
        if self.answering and ctx is not None:
            self.producer = None
            self.answering = False
            self.ctx = None
            if p is not None:
                p.abort()
            ctx.status = 499  # nginx's "client closed request"
            self.site.request_ended(ctx)
        self.closing = True

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.producer is not None:
            self.producer.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.producer is not None:
            self.producer.resume()

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
                if self.route is not None:
                    self._on_body(ev.data)
            elif t is EndOfMessage:
                if self.route is not None:
                    self._on_request_end()
            elif t is Request:
                if self.answering:
                    q = self.queue
                    if q is None:
                        q = self.queue = deque()
                    q.extend(events[i:] if i else events)
                    self._check_queue()
                    return
                self._on_request(ev)
            i += 1

    def _check_queue(self) -> None:
        if len(self.queue) > self.site.config.pipeline_queue_limit and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _on_request(self, req: Request) -> None:
        site = self.site
        target = req.target
        if target[:1] != b"/" and target.startswith(_ABSOLUTE):
            target = origin_form(target)
        q = target.find(b"?")
        path = target[:q] if q >= 0 else target
        route = site.routes.match(path)
        ctx = self.ctx = RequestContext(req.method, target, path, req.headers,
                                        route.endpoint if route is not None else UNMATCHED, site.clock())
        ctx.keep_alive = req.keep_alive
        ctx.http11 = req.http_version == b"1.1"
        site.on_head(ctx)
        self.route = route if route is not None else False
        self.body = []
        self.body_len = 0
        if req.content_length > site.config.max_payload_size:
            self._refuse_body()
            return
        budget = site.body_budget
        if budget is not None:
            cl = req.content_length
            # (admit's test inline: the common body fits, and pays no call)
            if cl > 0 and (self.body_held + cl > budget.share or budget.used + cl > budget.total):
                self._refuse_body(budget.admit(self.body_held, cl))
                return
        if req.expect_continue and req.content_length != 0:
            self.transport.write(writer.CONTINUE_100)

    def _on_body(self, data: bytes) -> None:
        n = len(data)
        self.body_len += n
        if self.body_len > self.site.config.max_payload_size:
            self._refuse_body()
            return
        budget = self.site.body_budget
        if budget is not None:
            # BodyBudget.reserve inline on the hot path; the method gives the verdict
            # when the bytes do not fit
            held = self.body_held + n
            used = budget.used + n
            if held > budget.share or used > budget.total:
                self._refuse_body(budget.reserve(self.body_held, n))
                return
            budget.used = used
            self.body_held = held
        self.body.append(data)

    def _refuse_body(self, verdict: int = 0) -> None:
        """Answers a request whose body will not be read: 413 over ``--max-payload-size``
        (``verdict`` 0), else the body budget's verdict (413 or 503)."""
        self.route = None
        self.answering = True
        self.linger = -1.0
        if self.body_held:
            self._release_body()
        self.body = []
        budget = self.site.body_budget
        status, message, code, extra = refusal(verdict, budget.share if budget is not None else 0)
        self.reply_error(status, message, code=code, close=True, extra=extra)

    def _release_body(self) -> None:
        """Gives the current request's reserved body bytes back (once: it zeroes them)."""
        n = self.body_held
        self.body_held = 0
        if self.body:
            self.body = []  # a body dropped before its end: its chunks go with their budget
        self.site.body_budget.release(n)

    def _on_request_end(self) -> None:
        route = self.route
        self.route = None
        ctx = self.ctx
        body = self.body
        ctx.raw = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        del body  # the chunks go now, not when the handler returns
        self.answering = True
        self.site.serve(self, route, ctx)

    def handler_failed(self) -> None:
        """A handler or filter raised: answer 500 if nothing was sent, else drop the connection."""
        if not self.answering:
            return
        p = self.producer
        if p is not None:
            self.producer = None
            p.abort()
        if self.pending_head is None and not self.chunked and not self.close_delimited and self.ctx is not None \
                and self.ctx.status == 0:
            self.reply_error(500, "internal gateway error")
        else:
            self.abort()

    # -- the response sink -------------------------------------------------------------

    def set_producer(self, producer) -> None:
        """``producer`` (pause/resume/abort) now produces the current response."""
        self.producer = producer
        if producer is not None and self.write_paused:
            producer.pause()

    @property
    def peer(self) -> str | None:
        """The client's IP address (``"127.0.0.1"``, ``"::1"``), read from the transport
        when asked (tenant resolution's ``ip:`` fallback); None when it has none."""
        t = self.transport
        addr = t.get_extra_info("peername") if t is not None else None
        return addr[0] if type(addr) is tuple and addr and type(addr[0]) is str and addr[0] else None

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the current response."""
        ctx = self.ctx
        return ctx is not None and ctx.keep_alive and not self.closing and not self.site.draining

    def reply(self, status: int, body: bytes, headers: list | None = None,
              close: bool = False, content_type: bytes = b"application/json") -> None:
        """Sends a complete gateway-made response and finishes the request."""
        ctx = self.ctx
        keep = not close and self.keep_alive
        ctx.status = status
        hdrs = [(b"content-type", content_type), (b"x-request-id", ctx.rid)]
        if headers:
            hdrs.extend(headers)
        cors = self.site.cors
        if cors is not None:
            hdrs.extend(cors.headers(ctx.headers))
        if ctx.method == _HEAD:
            # the head a GET would get, without its body (RFC 9110 §9.3.2)
            head = writer.response(status, hdrs, body, keep)
            self.transport.write(head[:len(head) - len(body)])
        else:
            self.transport.write(writer.response(status, hdrs, body, keep))
        self._finish(keep)

    def reply_error(self, status: int, message: str, code: str | None = None,
                    close: bool = False, extra: list | None = None, param: str | None = None) -> None:
        """Sends an error response in the request's API family format (``param``: the
        request field to blame); gateway errors also name their code in
        ``x-smg-error-code`` (smg/api/errors.py)."""
        ctx = self.ctx
        ctx.error_code = code or api_errors.default_code(status)
        h = api_errors.code_header(code, status)
        if h is not None:
            extra = [h, *extra] if extra else [h]
        self.reply(status, api_errors.error_body(ctx.family, status, message, code, param, ctx.rid), extra, close)

    def send_head(self, status: int, headers: list, length: int, skip: frozenset, extra: list | None) -> None:
        """A proxied response head: ``headers`` as the worker sent them (hop-by-hop and
        ``skip`` names dropped), then ``extra``; ``length`` is the body's Content-Length,
        or -1 when unknown (chunked to HTTP/1.1 clients, close-delimited otherwise). It
        is written with the first ``send``."""
        ctx = self.ctx
        ctx.status = status
        parts = [writer.status_line(status)]
        cors = self.site.cors
        if cors is not None:
            skip = cors.skip(skip)
        writer.forward_headers(parts, headers, skip)
        parts += (_RID_COLON, ctx.rid, _CRLF)
        if extra:
            parts.append(header_lines(extra, _NOTHING))
        if cors is not None:
            parts.append(header_lines(cors.headers(ctx.headers), _NOTHING))
        if length >= 0:
            parts.append(b"content-length: %d\r\n" % length)
        elif ctx.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self.chunked = True
        else:
            self.close_delimited = True
        if self.close_delimited or not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.pending_head = b"".join(parts)

    def send(self, pieces: list, end: bool) -> None:
        """Body bytes (and the pending head) in one write; ``end`` finishes the response."""
        head = self.pending_head
        if head is not None:
            self.pending_head = None
        if self.chunked:
            data = chunked(head, pieces, end)
        elif head is not None:
            data = head + pieces[0] if len(pieces) == 1 else b"".join([head, *pieces])
        else:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if data:
            self.transport.write(data)
        if end:
            self._finish(not self.close_delimited and self.keep_alive)

    def fail(self, event: bytes | None) -> None:
        """The response failed after its head: end it visibly. A chunked answer gets
        ``event`` (an SSE error event) and a proper end, then the connection closes;
        any other is aborted, the only signal of an incomplete body."""
        if event is not None and self.chunked and self.pending_head is None:
            self.transport.write(chunked(None, [event], True))
            self._finish(False)
        else:
            self.abort()

    def abort(self) -> None:
        """Drops the connection at once (RST); the current request ends here."""
        if self.body_held:
            self._release_body()
        self.producer = None
        ctx = self.ctx
        if self.answering and ctx is not None:
            self.answering = False
            self.ctx = None
            self.site.request_ended(ctx)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, keep_alive: bool) -> None:
        """The current response is complete; ``keep_alive`` False closes the connection."""
        ctx = self.ctx
        held = self.body_held
        if held:
            self.body_held = 0
            self.site.body_budget.release(held)
        self.producer = None
        self.answering = False
        self.ctx = None
        self.chunked = False
        self.close_delimited = False
        if ctx is not None:
            self.site.request_ended(ctx)
        if not keep_alive or self.closing:
            self.close()
            return
        self.wait_since = self.site.now
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
        t = self.transport
        if t is not None and not t.is_closing():
            if self.linger < 0.0:
                # answered before the body was read: send our FIN, read on and discard
                # (data_received drops input once closing), so the client's unread bytes
                # do not turn our close into a reset that destroys the answer
                can = getattr(t, "can_write_eof", None)
                if can is not None and can():
                    self.linger = self.site.now + LINGER_MAX_SECS
                    if self.read_paused:
                        self.read_paused = False
                        t.resume_reading()
                    t.write_eof()
                    return
            self.linger = 0.0
            t.close()

    def _protocol_error(self, e: RemoteProtocolError) -> None:
        if self.answering:
            # a response is in flight: the bad bytes belong to a later request
            self.closing = True
            return
        self._fresh()
        self.reply_error(e.status_hint, f"malformed request: {e}", close=True)

    def _fresh(self) -> None:
        """A context for an answer that belongs to no parsed request."""
        self.route = None
        ctx = self.ctx = RequestContext(b"", b"", b"", [], UNMATCHED, self.site.clock())
        ctx.rid = new_id(UNMATCHED.id_prefix)
        self.answering = True

    # -- timeouts (called by the gateway sweep) ----------------------------------------

    def check_timeouts(self, now: float, cfg) -> None:
        if self.linger > 0.0:
            if now > self.linger or now - self.last_active > LINGER_IDLE_SECS:
                self.linger = 0.0
                self.transport.close()
            return
        if self.closing or self.answering:
            return
        if self.route is not None:
            # receiving a body: it must keep coming, and at a minimum average rate
            limit = cfg.header_read_timeout_secs
            if now - self.last_active > limit or \
                    now - self.head_since > limit + self.body_len / cfg.body_read_min_rate:
                self.route = None
                self.answering = True
                self.reply_error(408, "timed out waiting for the request body", close=True)
            return
        if self.parser.buffered:
            if now - self.head_since > cfg.header_read_timeout_secs:
                self._fresh()
                self.reply_error(408, "timed out waiting for the request headers", close=True)
        elif now - self.wait_since > cfg.idle_connection_timeout_secs:
            self.close()


class TLSServerProtocol(HTTPServerProtocol):
    """The API listener's connection when it serves TLS (smg/server/tls.py)."""

    __slots__ = ()

    def connection_made(self, transport) -> None:
        # asyncio and uvloop call this after the TLS handshake: ALPN is settled
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
            try:
                from smg.server.h2_connection import H2ServerConnection
            except ImportError:
                # h2 is offered only when that module imports (smg.server.tls.alpn_protocols),
                # so this is a broken install: refuse rather than speak HTTP/1.1 to an h2 client
                log.error("ALPN selected h2 but smg.server.h2_connection cannot be imported")
                transport.abort()
                return
            H2ServerConnection(self.site, transport)  # takes the transport over (set_protocol)
            return
        super().connection_made(transport)

    def eof_received(self):
        # a TLS transport cannot stay half-open (asyncio and uvloop warn when asked to)
        super().eof_received()
        return False
