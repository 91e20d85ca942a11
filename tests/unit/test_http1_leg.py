"""Http1Leg without sockets: a fake pool and fake connections.

The leg resends once on a fresh connection when a reused pooled one dies before any
response byte (the worker closed it while idle) and the owner never hears of it; any
other failure reaches the owner exactly once. The request head forwards end-to-end
headers only, including when the Connection header that nominates one comes last.
"""
from __future__ import annotations

from smg.errors import ConnectFailed, UpstreamClosed
from smg.http1 import writer
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.upstream.forwarding import Forwarding
from smg.upstream.http1_leg import Http1Leg, request_head
from smg.workers.worker import Worker

CHAT = next(e for e in ENDPOINTS if e.path == "/v1/chat/completions")


class FakeConn:
    def __init__(self, reused: bool) -> None:
        self.reused = reused
        self.got_bytes = False
        self.sent: list = []
        self.owner = None
        self.aborted = False
        self.paused = False

    def send(self, owner, data, method) -> None:
        self.owner = owner
        self.sent.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True


class FakePool:
    def __init__(self, idle=None) -> None:
        self.idle = list(idle or [])
        self.connects: list = []
        self.put_back: list = []

    def take(self):
        return self.idle.pop() if self.idle else None

    def connect(self, callback):
        self.connects.append(callback)
        return _Task()

    def put(self, conn) -> None:
        self.put_back.append(conn)


class _Task:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Owner:
    def __init__(self) -> None:
        self.events: list = []
        self.errors: list = []

    def on_leg_events(self, events) -> None:
        self.events.append(events)

    def on_leg_error(self, err) -> None:
        self.errors.append(err)


def ctx(headers=()):
    c = RequestContext(b"POST", b"/v1/chat/completions", b"/v1/chat/completions", list(headers), CHAT, 0.0)
    c.raw = b"{}"
    c.rid = b"rid-1"
    return c


def test_stale_pooled_connection_is_resent_once_on_a_fresh_one():
    stale = FakeConn(reused=True)
    pool = FakePool([stale])
    owner = Owner()
    leg = Http1Leg(pool, owner)
    leg.start(ctx(), Worker("http://w:1"), None)
    assert stale.sent and not pool.connects
    leg.on_upstream_error(UpstreamClosed("closed while idle"))
    assert owner.errors == [] and len(pool.connects) == 1       # resent, owner not told
    fresh = FakeConn(reused=False)
    pool.connects[0](fresh, None)
    assert fresh.sent == stale.sent
    fresh.got_bytes = True
    leg.on_upstream_error(UpstreamClosed("reset"))
    assert len(owner.errors) == 1 and len(pool.connects) == 1   # a second failure is the owner's


def test_a_reused_connection_that_answered_is_not_resent():
    conn = FakeConn(reused=True)
    pool = FakePool([conn])
    owner = Owner()
    leg = Http1Leg(pool, owner)
    leg.start(ctx(), Worker("http://w:1"), None)
    conn.got_bytes = True
    leg.on_upstream_error(UpstreamClosed("mid-response"))
    assert len(owner.errors) == 1 and not pool.connects


def test_connect_failure_reaches_the_owner_once_and_abort_cancels_connecting():
    pool = FakePool()
    owner = Owner()
    leg = Http1Leg(pool, owner)
    leg.start(ctx(), Worker("http://w:1"), None)
    pool.connects[0](None, ConnectFailed("refused"))
    assert [type(e) for e in owner.errors] == [ConnectFailed]
    leg2 = Http1Leg(pool, owner)
    leg2.start(ctx(), Worker("http://w:1"), None)
    leg2.abort()
    late = FakeConn(reused=False)
    pool.connects[1](late, None)            # a connection that completes after the abort goes back
    assert pool.put_back == [late] and not late.sent


def test_finish_pools_only_a_keep_alive_connection_and_pause_carries_over():
    pool = FakePool()
    leg = Http1Leg(pool, Owner())
    leg.pause()
    leg.start(ctx(), Worker("http://w:1"), None)
    conn = FakeConn(reused=False)
    pool.connects[0](conn, None)
    assert conn.paused                      # paused before it was connected
    leg.finish(True)
    assert pool.put_back == [conn]
    leg2 = Http1Leg(FakePool([FakeConn(False)]), Owner())
    leg2.start(ctx(), Worker("http://w:1"), None)
    c2 = leg2.conn
    leg2.finish(False)
    assert c2.aborted


def test_request_head_drops_hop_by_hop_headers_wherever_connection_stands():
    headers = [(b"x-drop", b"1"), (b"x-keep", b"2"), (b"connection", b"x-drop, keep-alive"), (b"te", b"trailers"),
               (b"authorization", b"Bearer client")]
    every = Forwarding(forward_all=True)
    head = request_head(b"POST", b"/v1/chat/completions", Worker("http://w:1"), headers, 2, fwd=every)
    assert b"x-keep: 2\r\n" in head and b"x-drop" not in head and b"te:" not in head
    assert b"authorization: Bearer client" in head
    w = Worker("http://w:1")
    w.api_key = b"sk-worker"
    head = request_head(b"POST", b"/x", w, headers, 2, fwd=every)
    assert b"Bearer sk-worker" in head and b"Bearer client" not in head
    # the allow-list honours a Connection header too: a nominated allowed name is dropped
    nominated = [(b"x-request-id", b"r1"), (b"x-correlation-id", b"c1"), (b"connection", b"x-correlation-id")]
    head = request_head(b"POST", b"/x", Worker("http://w:1"), nominated, 2)
    assert b"x-request-id: r1\r\n" in head and b"x-correlation-id" not in head


def test_response_headers_drop_nominated_names_in_any_order():
    parts: list = []
    writer.forward_headers(parts, [(b"x-secret", b"1"), (b"connection", b"x-secret"), (b"x-ok", b"2")],
                           writer.HOP_BY_HOP)
    assert parts == [b"x-ok: 2\r\n"]
    parts = []
    writer.forward_headers(parts, [(b"connection", b"close"), (b"x-ok", b"2")], writer.HOP_BY_HOP)
    assert parts == [b"x-ok: 2\r\n"]
