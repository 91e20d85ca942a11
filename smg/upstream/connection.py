"""UpstreamConnection: one keep-alive HTTP/1.1 connection to a worker.

It parses responses with the native ResponseParser and hands each batch of events to
the leg that currently owns it (``owner``, smg/upstream/http1_leg.py), which implements:
    on_upstream_events(events), on_upstream_error(exc: UpstreamError subclass)
While idle in the pool it has no owner; any byte or EOF then closes it. Failures are
typed (smg/errors.py): a malformed response is ``UpstreamProtocolError``, a
connection that ends before the response did is ``UpstreamClosed``.
"""
from __future__ import annotations

import asyncio

from smg.errors import RemoteProtocolError, UpstreamClosed, UpstreamProtocolError
from smg.http1.parser import ResponseParser


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "owner", "idle_since", "closed", "reused",
                 "got_bytes")

    def __init__(self, pool) -> None:
        self.pool = pool
        self.transport = None
        self.parser = ResponseParser(pool.max_head_size)
        self.owner = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False
        self.got_bytes = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, owner, data: bytes, method: bytes) -> None:
        """Starts a request on this connection; ``owner`` receives the response."""
        self.owner = owner
        self.got_bytes = False
        if method == b"HEAD":
            self.parser.set_request_method(method)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # a worker must not speak on an idle connection
            self.abort()
            return
        self.got_bytes = True
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            self.owner = None
            self.abort()
            owner.on_upstream_error(UpstreamProtocolError(f"malformed response from worker: {e}"))
            return
        owner.on_upstream_events(events)

    def eof_received(self):
        owner = self.owner
        if owner is None:
            return False
        try:
            events = self.parser.feed_eof()
        except RemoteProtocolError as e:
            self.owner = None
            owner.on_upstream_error(UpstreamClosed(f"worker closed the connection early: {e}"))
            return False
        if events:
            owner.on_upstream_events(events)
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        owner = self.owner
        self.pool.forget(self)
        if owner is not None:
            self.owner = None
            owner.on_upstream_error(UpstreamClosed("worker closed the connection"))

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Closes at once (an RST to the worker: this is how an engine learns to stop)."""
        self.owner = None
        if not self.closed:
            self.closed = True
            self.transport.abort()
