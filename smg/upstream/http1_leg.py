"""Http1Leg: one attempt's request to a worker over its keep-alive HTTP/1.1 pool.

An upstream leg is what the exchange (smg/server/exchange.py) drives for one
attempt; every kind (this one; gRPC channels and prefill/decode pairs later) has the
same face:

- ``start(ctx, worker, trace)``: build the request from the context and send it;
- ``pause()`` / ``resume()``: stop and restart reading (the client is slow);
- ``finish(keep_alive)``: the response is complete; keep the connection if the worker
  allowed it;
- ``abort()``: stop at once (the worker sees the connection close);

and reports to its owner with ``on_leg_events(events)`` — batches of head / data /
end events (smg.http1.events ``Response``, ``Data``, ``EndOfMessage``), the
vocabulary every leg speaks — and ``on_leg_error(err)``, an ``UpstreamError``
subclass (smg/errors.py), at most once, after which the leg is spent.

Rules:
- The request head carries the client headers the forwarding decision allows
  (smg/upstream/forwarding.py: SMG's allow-list by default), and Host, Content-Type
  and Content-Length set by the gateway; ``x-request-id`` is the client's when it
  sent one (the request's id in its place when the client's was invalid), else none
  or a fresh UUID4 (``--upstream-request-id``). A worker's API
  key replaces the client's Authorization. A credential the gateway consumed (one of
  its own keys, smg/auth: ``ctx.principal.consumed_header``) never reaches a worker;
  any other client Authorization is forwarded, as SMG does. Names a Connection header
  nominates are dropped wherever it stands.
- A reused pooled connection that dies before any response byte is sent again once on
  a fresh connection, inside the leg: the worker closed it while it was idle, and the
  owner never hears of it (not an attempt, not a failure).
- A connection goes back to the pool only from ``finish`` after a response that allows
  keep-alive; any other end aborts it.
"""
from __future__ import annotations

import functools
import uuid

import orjson

from smg.http1 import writer
from smg.http1.heads import allowed_lines, header_lines
from smg.upstream.forwarding import DEFAULT

# names the gateway replaces on some requests: with tracing on, its own span context
# replaces the client's; a worker key replaces the client's Authorization
_TRACE = frozenset((b"traceparent", b"tracestate"))
_AUTH = frozenset((b"authorization",))
_HAS_BODY = (b"POST", b"PUT", b"PATCH")
_RID = b"x-request-id"
_RID_COLON = b"x-request-id: "
_HTTP11_HOST = b" HTTP/1.1\r\nhost: "
_BEARER = b"authorization: Bearer "
_CRLF = b"\r\n"
_NOTHING: frozenset = frozenset()


@functools.lru_cache(maxsize=64)
def _replaced(traced: bool, auth: bool, drop: bytes | None) -> frozenset:
    s = frozenset()
    if traced:
        s |= _TRACE
    if auth:
        s |= _AUTH
    if drop is not None:
        s |= {drop}
    return s


@functools.lru_cache(maxsize=64)
def _skip_all(replaced: frozenset) -> frozenset:
    return writer.HOP_BY_HOP | replaced


def request_head(method: bytes, target: bytes, worker, headers: list, body_len: int,
                 trace: list | None = None, drop: bytes | None = None, fwd=DEFAULT,
                 rid: bytes | None = None) -> bytes:
    """The request head sent to ``worker`` (bytes; no I/O).

    ``headers``: the client's (lower-case names); ``trace``: the gateway's span context
    headers (None: tracing off); ``drop``: the header holding a credential the gateway
    consumed; ``fwd``: the forwarding decision (smg/upstream/forwarding.py); ``rid``:
    the request's id, sent in place of the client's ``x-request-id`` when it sent one
    (the same value unless the client's was invalid and replaced; None: as sent).
    """
    # pieces joined once at the end (cheaper than formatting each line with bytes % tuple)
    parts = [method, b" ", target, _HTTP11_HOST, worker.host_header, _CRLF]
    if body_len or method in _HAS_BODY:
        # bytes % int is the cheapest int-to-ASCII here (measured against str(n).encode())
        parts.append(b"content-length: %d\r\n" % body_len if fwd.forward_all else
                     b"content-type: application/json\r\ncontent-length: %d\r\n" % body_len)
    if trace:
        parts.append(header_lines(trace, _NOTHING))
    key = worker.api_key
    if key:
        parts += (_BEARER, key, _CRLF)
    replaced = _replaced(True, bool(key), drop) if trace else \
        (_replaced(False, bool(key), drop) if key or drop is not None else None)
    if fwd.forward_all:
        skip = _skip_all(replaced or frozenset())
        sent_rid = any(n == _RID for n, _ in headers)
        if sent_rid and rid is not None:
            skip = _skip_all(skip | {_RID})
            parts += (_RID_COLON, rid, _CRLF)
        writer.forward_headers(parts, headers, skip)
        if fwd.mint_request_id and not sent_rid:
            parts += (_RID_COLON, str(uuid.uuid4()).encode(), _CRLF)
        parts.append(_CRLF)
        return b"".join(parts)
    got = allowed_lines(headers, fwd.verdict, fwd.classify, replaced, rid)
    if got is None:  # the rare path: a Connection header nominates names
        has_rid = _allowed_nominated(parts, headers, fwd, replaced, rid)
    else:
        lines, has_rid = got
        parts.append(lines)
    if not has_rid and fwd.mint_request_id:
        parts += (_RID_COLON, str(uuid.uuid4()).encode(), _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def _allowed_nominated(parts: list, headers: list, fwd, replaced: frozenset | None, rid: bytes | None) -> bool:
    """Appends to ``parts`` the lines of the default forwarding mode when a Connection
    header nominated names as hop-by-hop (allowed_lines returned None); returns has_rid.
    The Connection headers and the names they nominate are left out first, then the
    rest goes through the same ``allowed_lines``."""
    nominated = writer.connection_tokens(headers) | {b"connection"}
    kept = [(n, v) for n, v in headers if n not in nominated]
    lines, has_rid = allowed_lines(kept, fwd.verdict, fwd.classify, replaced, rid)
    parts.append(lines)
    return has_rid


class Http1Leg:
    __slots__ = ("pool", "owner", "fwd", "conn", "connect_task", "request", "method", "paused", "resent",
                 "spent")

    def __init__(self, pool, owner, fwd=DEFAULT) -> None:
        self.pool = pool
        self.owner = owner
        self.fwd = fwd
        self.conn = None
        self.connect_task = None
        self.request = b""
        self.method = b""
        self.paused = False
        self.resent = False
        self.spent = False

    def start(self, ctx, worker, trace: list | None) -> None:
        body = ctx.raw
        if worker.dp_rank is not None and ctx.body is not None:
            # DP-aware: the rank this logical worker stands for goes into the JSON body
            body = orjson.dumps(dict(ctx.body, data_parallel_rank=worker.dp_rank))
        self.method = ctx.method
        p = ctx.principal
        self.request = request_head(ctx.method, ctx.target, worker, ctx.headers, len(body), trace,
                                    p.consumed_header if p is not None else None, self.fwd, ctx.rid) + body
        conn = self.pool.take()
        if conn is None:
            self.connect_task = self.pool.connect(self._on_connected)
        else:
            self._send(conn)

    def _on_connected(self, conn, err) -> None:
        self.connect_task = None
        if self.spent:
            if conn is not None:
                self.pool.put(conn)
            return
        if err is not None:
            self.spent = True
            self.owner.on_leg_error(err)
            return
        self._send(conn)

    def _send(self, conn) -> None:
        self.conn = conn
        if self.paused:
            conn.pause_reading()
        conn.send(self, self.request, self.method)

    # -- from the connection -----------------------------------------------------------

    def on_upstream_events(self, events: list) -> None:
        self.owner.on_leg_events(events)

    def on_upstream_error(self, err) -> None:
        conn = self.conn
        self.conn = None
        if self.spent:
            return
        if conn is not None and conn.reused and not conn.got_bytes and not self.resent:
            # the worker closed an idle pooled connection as we reused it: send again
            self.resent = True
            self.connect_task = self.pool.connect(self._on_connected)
            return
        self.spent = True
        self.owner.on_leg_error(err)

    # -- from the owner ---------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        if self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.conn is not None:
            self.conn.resume_reading()

    def finish(self, keep_alive: bool) -> None:
        """The response is complete (``keep_alive``: the worker allows reuse)."""
        self.spent = True
        conn = self.conn
        self.conn = None
        if conn is not None:
            if keep_alive:
                self.pool.put(conn)
            else:
                conn.abort()

    def abort(self) -> None:
        self.spent = True
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()
