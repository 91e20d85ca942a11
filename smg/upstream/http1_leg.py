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
- The request head carries the end-to-end client headers (hop-by-hop ones, RFC 9110
  §7.6.1, dropped), and Host, Content-Length and ``x-request-id`` set by the gateway;
  a worker's API key replaces the client's Authorization. A credential the gateway
  consumed (one of its own keys, smg/auth: ``ctx.principal.consumed_header``) never
  reaches a worker; any other client Authorization is forwarded, as SMG does.
- A reused pooled connection that dies before any response byte is sent again once on
  a fresh connection, inside the leg: the worker closed it while it was idle, and the
  owner never hears of it (not an attempt, not a failure).
- A connection goes back to the pool only from ``finish`` after a response that allows
  keep-alive; any other end aborts it.
"""
from __future__ import annotations

import functools

import orjson

from smg.http1 import writer

_SKIP_REQUEST = writer.HOP_BY_HOP | {b"x-request-id"}
# with tracing on, the gateway's own span context replaces the client's
_SKIP_TRACED = _SKIP_REQUEST | {b"traceparent", b"tracestate"}
_SKIP_AUTH = _SKIP_REQUEST | {b"authorization"}
_SKIP_TRACED_AUTH = _SKIP_TRACED | {b"authorization"}
_HAS_BODY = (b"POST", b"PUT", b"PATCH")


@functools.lru_cache(maxsize=16)
def _also_skip(skip: frozenset, name: bytes) -> frozenset:
    return skip | {name}


def request_head(method: bytes, target: bytes, worker, rid: bytes, headers: list,
                 body_len: int, trace: list | None = None, drop: bytes | None = None) -> bytes:
    """The request head sent to ``worker`` (bytes; no I/O)."""
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\nx-request-id: %s\r\n" % (method, target, worker.host_header, rid)]
    if trace:
        for n, v in trace:
            parts.append(b"%s: %s\r\n" % (n, v))
    if body_len or method in _HAS_BODY:
        parts.append(b"content-length: %d\r\n" % body_len)
    if worker.api_key:
        parts.append(b"authorization: Bearer %s\r\n" % worker.api_key)
        skip = _SKIP_TRACED_AUTH if trace else _SKIP_AUTH
    else:
        skip = _SKIP_TRACED if trace else _SKIP_REQUEST
    if drop is not None and drop not in skip:
        skip = _also_skip(skip, drop)  # the gateway's own credential (``drop``) stays here
    writer.forward_headers(parts, headers, skip)
    parts.append(b"\r\n")
    return b"".join(parts)


class Http1Leg:
    __slots__ = ("pool", "owner", "conn", "connect_task", "request", "method", "paused", "resent", "spent")

    def __init__(self, pool, owner) -> None:
        self.pool = pool
        self.owner = owner
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
        self.request = request_head(ctx.method, ctx.target, worker, ctx.rid, ctx.headers, len(body), trace,
                                    p.consumed_header if p is not None else None) + body
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
