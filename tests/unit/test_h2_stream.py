"""The HTTP/2 stream sink (smg/server/h2_stream.py) and its connection, driven in
memory: an h2 client connection ↔ H2ServerConnection on the gateway's real request
path (smg.testing.pathbench: filters → selection → Exchange → Http1Leg → an in-memory
worker connection). No sockets; the loop runs only for the deferred flushes."""
from __future__ import annotations

import asyncio
import json

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset,
                       WindowUpdated)
from h2.settings import SettingCodes, Settings

from smg.errors import UpstreamClosed
from smg.http1 import writer
from smg.server import h2_stream
from smg.server.h2_connection import H2ServerConnection
from smg.server.h2_stream import BadRequest, Malformed, request_head
from smg.testing.pathbench import RESPONSE, MemoryTransport, PathBench

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hello"}]}'


class H2Transport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol = None
        self.aborted = False

    def set_protocol(self, p) -> None:
        self.protocol = p

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        super().abort()
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default


class Client:
    """An h2 client connection wired to an H2ServerConnection in memory."""

    def __init__(self, pb: PathBench, window: int | None = None) -> None:
        self.pb = pb
        h2 = self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            h2.local_settings = Settings(client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window})
        h2.initiate_connection()
        self.t = H2Transport()
        self.conn = H2ServerConnection(pb.gw.site, self.t, h2.data_to_send())
        self.events: list = []
        self.pump()

    def pump(self) -> list:
        """Server bytes → client; the client's answers (ACKs) → server. Returns new events."""
        data = b"".join(bytes(d) for d in self.t.out)
        self.t.out.clear()
        evs = self.h2.receive_data(data) if data else []
        self.events.extend(evs)
        out = self.h2.data_to_send()
        if out and not self.conn.closing:
            self.conn.data_received(out)
        return evs

    def send(self) -> None:
        out = self.h2.data_to_send()
        if out:
            self.conn.data_received(out)

    def request(self, method: bytes = b"POST", path: bytes = b"/v1/chat/completions", body: bytes = CHAT,
                extra: list | None = None) -> int:
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(b":method", method), (b":path", path), (b":scheme", b"http"), (b":authority", b"gw")]
        if body:
            hdrs.append((b"content-type", b"application/json"))
        hdrs.extend(extra or [])
        self.h2.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h2.send_data(sid, body, end_stream=True)
        self.send()
        return sid

    def data(self, sid: int, n: int, end: bool = False) -> None:
        """``n`` body bytes in frames of the default maximum size (not sent yet)."""
        while n > 0:
            k = min(n, 16384)
            n -= k
            self.h2.send_data(sid, b" " * k, end_stream=end and n == 0)

    def of(self, sid: int, kind) -> list:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", None) == sid]

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(sid, DataReceived))

    def headers(self, sid: int) -> dict:
        (r,) = self.of(sid, ResponseReceived)
        return dict(r.headers)


@pytest.fixture
def pb():
    bench = PathBench(metrics=True, access_log=False)
    ended = []

    def hold(conn, ctx):
        ctx.add_end_hook(lambda c: ended.append(c.status))

    route = bench.gw.routes.exact[b"/v1/chat/completions"]
    route.chain = (hold,) + route.chain
    bench.ended = ended
    yield bench
    bench.close()


def run(pb: PathBench, coro):
    return pb.loop.run_until_complete(asyncio.wait_for(coro, 10))


async def turn():
    """Lets the connection's deferred flush run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def worker_request(pb) -> bytes:
    out = b"".join(pb.conn.transport.out)
    pb.conn.transport.out.clear()
    return out


def sse(n: int, size: int = 100) -> bytes:
    ev = b"data: " + b"x" * size + b"\n\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(ev), ev) for _ in range(n))
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + body


# -- request assembly -------------------------------------------------------------------

def test_request_head_maps_pseudo_headers_and_authority():
    method, target, hdrs, length, expect = request_head(
        [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.example"), (b":path", b"/v1/x?a=1"),
         (b"content-length", b"12"), (b"expect", b"100-continue"), (b"x-a", b"1")])
    assert (method, target, length, expect) == (b"POST", b"/v1/x?a=1", 12, True)
    assert hdrs == [(b"content-length", b"12"), (b"expect", b"100-continue"), (b"x-a", b"1"),
                    (b"host", b"api.example")]


def test_request_head_takes_a_host_header_equal_to_authority_and_joins_cookies():
    _, _, hdrs, length, _ = request_head([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"),
                                          (b":path", b"/"), (b"cookie", b"a=1"), (b"host", b"a"),
                                          (b"cookie", b"b=2")])
    assert hdrs == [(b"host", b"a"), (b"cookie", b"a=1; b=2")] and length == -1


_BASE = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw"), (b":path", b"/")]


@pytest.mark.parametrize("values", [[b"12a"], [b"-1"], [b"10", b"11"]])
def test_request_head_refuses_bad_content_length(values):
    with pytest.raises(BadRequest) as e:
        request_head(_BASE + [(b"content-length", v) for v in values])
    assert not isinstance(e.value, Malformed)


@pytest.mark.parametrize("headers", [
    _BASE[1:],                                                    # no :method
    [_BASE[0], _BASE[2], _BASE[3]],                               # no :scheme
    _BASE[:3],                                                    # no :path
    [_BASE[0], _BASE[1], _BASE[3]],                               # neither :authority nor host
    _BASE + [(b"host", b"other")],                                # host differs from :authority
    [_BASE[0], _BASE[1], _BASE[3], (b"host", b"a"), (b"host", b"a")],  # two hosts
    _BASE + [(b":protocol", b"websocket")],                       # :protocol outside CONNECT
    [(b":method", b"CONNECT"), (b":authority", b"gw"), (b":path", b"/")],  # CONNECT with :path
])
def test_request_head_refuses_malformed_requests(headers):
    with pytest.raises(Malformed):
        request_head(headers)


# -- answers ------------------------------------------------------------------------------

def test_gateway_answer_and_head(pb):
    async def go():
        c = Client(pb)
        sid = c.request(b"GET", b"/health", b"")
        c.pump()
        h = c.headers(sid)
        assert h[b":status"] == b"200" and h[b"content-length"] == b"2" and h[b"x-request-id"]
        assert h[b"content-type"].startswith(b"text/plain")
        assert c.body(sid) == b"OK" and c.of(sid, StreamEnded)
        sid = c.request(b"HEAD", b"/health", b"")
        c.pump()
        assert c.headers(sid)[b"content-length"] == b"2" and c.body(sid) == b"" and c.of(sid, StreamEnded)
        sid = c.request(b"GET", b"/nope", b"")
        c.pump()
        assert c.headers(sid)[b":status"] == b"404" and b"no route for /nope" in c.body(sid)
        assert c.conn.streams == {}
    run(pb, go())


def test_proxied_answer_drops_connection_specific_headers(pb):
    body = b'{"ok":true}'
    resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive, x-hop\r\n"
            b"keep-alive: timeout=5\r\nx-hop: secret\r\nx-end: kept\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    async def go():
        c = Client(pb)
        sid = c.request()
        req = worker_request(pb)
        assert req.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"\r\nhost: gw" not in req
        pb.conn.data_received(resp)
        await turn()
        c.pump()
        h = c.headers(sid)
        assert h[b"x-end"] == b"kept" and h[b"content-length"] == b"%d" % len(body)
        assert not set(h) & (writer.HOP_BY_HOP - {b"content-length"} | {b"x-hop"})
        assert c.body(sid) == body and c.of(sid, StreamEnded)
        assert pb.ended == [200] and pb.worker.inflight == 0
    run(pb, go())


def test_request_bodies_reopen_the_window_as_they_are_taken_in(pb):
    async def go():
        c = Client(pb)
        assert c.h2.outbound_flow_control_window == 65535
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                                (b":authority", b"gw")])
        c.data(sid, 40000)
        assert c.h2.outbound_flow_control_window == 65535 - 40000
        c.send()
        c.pump()
        # the 40000 bytes are in the gateway's buffer: their window came back (h2's window
        # manager batches the updates by half windows), and never more than was taken in
        assert 65535 - 40000 + 32768 <= c.h2.outbound_flow_control_window <= 65535
        assert any(isinstance(e, WindowUpdated) and e.stream_id == 0 for e in c.events)
    run(pb, go())


def test_a_body_over_the_payload_limit_is_refused_and_the_rest_of_it_stopped():
    pb = PathBench(metrics=True, access_log=False, max_payload_size=1000)

    async def go():
        c = Client(pb)
        # announced too large: 413 at once, then RST_STREAM NO_ERROR (stop sending)
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                                (b":authority", b"gw"), (b"content-length", b"5000")])
        c.send()
        c.pump()
        assert c.headers(sid)[b":status"] == b"413"
        (rst,) = c.of(sid, StreamReset)
        assert rst.error_code == ErrorCodes.NO_ERROR
        # not announced: refused when the bytes pass the limit; their window still comes back
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                                (b":authority", b"gw")])
        c.data(sid, 40000)
        c.send()
        c.pump()
        assert c.headers(sid)[b":status"] == b"413" and c.of(sid, StreamReset)
        assert c.h2.outbound_flow_control_window >= 65535 - 40000 + 32768
        # the connection goes on
        sid = c.request(b"GET", b"/health", b"")
        c.pump()
        assert c.headers(sid)[b":status"] == b"200"
    run(pb, go())
    pb.close()


# -- flow control and backpressure --------------------------------------------------------

def test_a_closed_window_holds_the_answer_and_pauses_the_worker(pb):
    async def go():
        c = Client(pb, window=1000)
        sid = c.request()
        worker_request(pb)
        pb.conn.data_received(sse(1000))           # ~110 KB in one upstream read
        await turn()
        c.pump()
        st = c.conn.streams[sid]
        ex = st.producer
        assert len(c.body(sid)) == 1000             # exactly the client's window
        assert st.backlog_len > h2_stream.BACKLOG_HIGH and ex.paused and st.paused
        # the client reads: each WINDOW_UPDATE lets that much more go
        got = 1000
        while c.conn.streams.get(sid) is not None and st.backlog_len >= h2_stream.BACKLOG_LOW:
            c.h2.acknowledge_received_data(1000, sid)
            c.h2.increment_flow_control_window(1000, stream_id=sid)
            c.send()
            c.pump()
            assert len(c.body(sid)) > got
            got = len(c.body(sid))
        assert not ex.paused and not st.paused      # resumed under the low-water mark
    run(pb, go())


def test_a_one_frame_answer_larger_than_the_window_goes_in_parts(pb):
    """The one-frame fast path of _write falls back to window-sized frames."""
    async def go():
        c = Client(pb, window=100)
        sid = c.request()
        worker_request(pb)
        pb.conn.data_received(RESPONSE)
        await turn()
        c.pump()
        assert len(c.body(sid)) == 100 and not c.of(sid, StreamEnded)
        c.h2.increment_flow_control_window(10000, stream_id=sid)
        c.send()
        await turn()
        c.pump()
        assert c.of(sid, StreamEnded) and c.body(sid).endswith(b"}") and json.loads(c.body(sid))["choices"]
    run(pb, go())


def test_client_reset_mid_answer_aborts_the_worker_and_ends_as_499(pb):
    async def go():
        c = Client(pb)
        sid = c.request()
        worker_request(pb)
        head, _, rest = sse(5).partition(b"\r\n\r\n")
        pb.conn.data_received(head + b"\r\n\r\n" + rest[:60])
        await turn()
        c.pump()
        assert c.headers(sid)[b":status"] == b"200"
        c.h2.reset_stream(sid, ErrorCodes.CANCEL)
        c.send()
        assert pb.ended == [499] and pb.worker.inflight == 0
        assert pb.conn.transport.closing  # the worker connection was closed: the engine stops
        assert c.conn.streams == {}
    run(pb, go())


def test_a_stream_stuck_at_zero_window_is_reset_after_the_timeout(pb):
    async def go():
        c = Client(pb, window=100)
        sid = c.request()
        worker_request(pb)
        pb.conn.data_received(sse(50))
        await turn()
        c.pump()
        cfg = pb.gw.config
        now = pb.gw.site.now
        c.conn.check_timeouts(now + cfg.http2_zero_window_timeout_secs / 2, cfg)
        assert sid in c.conn.streams
        c.conn.check_timeouts(now + cfg.http2_zero_window_timeout_secs + 1, cfg)
        c.pump()
        (rst,) = c.of(sid, StreamReset)
        assert rst.error_code == ErrorCodes.CANCEL and pb.ended == [499] and pb.worker.inflight == 0
        assert c.conn.stats.http2_resets.value(("gateway", "zero_window")) == 1
    run(pb, go())


# -- failures after the head ------------------------------------------------------------------

def test_a_cut_sse_answer_ends_with_the_error_event_and_end_stream(pb):
    async def go():
        c = Client(pb)
        sid = c.request(body=CHAT[:-1] + b',"stream":true}')
        worker_request(pb)
        head, _, rest = sse(3).partition(b"\r\n\r\n")
        pb.conn.data_received(head + b"\r\n\r\n" + rest)
        pb.conn.owner.on_upstream_error(UpstreamClosed("worker went away"))
        await turn()
        c.pump()
        body = c.body(sid)
        assert body.count(b"data: x") == 3 and b'"code":"upstream_error"' in body
        assert c.of(sid, StreamEnded) and not c.of(sid, StreamReset)
    run(pb, go())


def test_a_cut_sized_answer_is_reset(pb):
    async def go():
        c = Client(pb)
        sid = c.request()
        worker_request(pb)
        pb.conn.data_received(RESPONSE[:-20])
        pb.conn.owner.on_upstream_error(UpstreamClosed("worker went away"))
        await turn()
        c.pump()
        (rst,) = c.of(sid, StreamReset)
        assert rst.error_code == ErrorCodes.INTERNAL_ERROR and not c.of(sid, StreamEnded)
        assert pb.ended == [200]  # the status that went out; the request ended once
    run(pb, go())


# -- the connection -----------------------------------------------------------------------

def test_drain_sends_goaway_lets_open_streams_finish_and_refuses_new_ones(pb):
    async def go():
        c = Client(pb)
        sid = c.request()
        worker_request(pb)
        c.conn.drain()
        c.pump()
        (ga,) = [e for e in c.events if isinstance(e, ConnectionTerminated)]
        assert ga.error_code == ErrorCodes.NO_ERROR and ga.last_stream_id == sid
        pb.conn.data_received(RESPONSE)
        await turn()
        assert c.t.closing  # the last stream ended: the connection closed
        # the open stream finished (the client's h2 state no longer takes frames after a
        # GOAWAY, so read the bytes with a fresh decoder)
        raw = b"".join(bytes(d) for d in c.t.out)
        assert b"Hello from the smg mock worker." in raw
        assert pb.ended == [200]
    run(pb, go())


def test_idle_connection_is_closed_with_goaway(pb):
    async def go():
        c = Client(pb)
        cfg = pb.gw.config
        c.conn.check_timeouts(pb.gw.site.now + cfg.idle_connection_timeout_secs + 1, cfg)
        c.pump()
        (ga,) = [e for e in c.events if isinstance(e, ConnectionTerminated)]
        assert ga.error_code == ErrorCodes.NO_ERROR and c.t.closing
        assert pb.gw.metrics.http2_goaway.value(("idle",)) == 1
    run(pb, go())


def test_connection_loss_aborts_every_stream(pb):
    async def go():
        c = Client(pb)
        c.request()
        worker_request(pb)
        c.request(b"GET", b"/health", b"")  # answered at once
        c.conn.connection_lost(None)
        assert pb.ended == [499] and pb.worker.inflight == 0 and c.conn.streams == {}
        assert c.conn not in pb.gw.site.connections
    run(pb, go())


def test_while_the_transport_is_paused_answers_wait_in_their_streams(pb):
    async def go():
        c = Client(pb)
        c.conn.pause_writing()                      # the client stopped reading the socket
        sids = [c.request(b"GET", b"/health", b"") for _ in range(3)]
        proxied = c.request()
        worker_request(pb)
        pb.conn.data_received(RESPONSE)
        await turn()
        raw = b"".join(bytes(d) for d in c.t.out)
        assert b"ok" not in raw and b"Hello" not in raw   # no head, no body went to the transport
        assert set(c.conn.streams) == set(sids) | {proxied}  # each waits in its open stream
        assert all(st.queued is not None for st in c.conn.streams.values())
        c.conn.resume_writing()
        c.pump()
        assert [c.headers(s)[b":status"] for s in sids] == [b"200"] * 3
        assert b"Hello from the smg mock worker." in c.body(proxied) and c.of(proxied, StreamEnded)
        assert c.conn.streams == {} and c.conn.blocked == {}
    run(pb, go())


def test_a_client_that_never_reads_is_bounded_by_the_stream_limit():
    pb = PathBench(metrics=True, access_log=False, http2_max_concurrent_streams=4)

    async def go():
        c = Client(pb)
        c.h2.remote_settings.max_concurrent_streams = 1000  # a client ignoring the server's SETTINGS
        c.h2.remote_settings.acknowledge()
        c.conn.pause_writing()
        for _ in range(4):
            c.request(b"GET", b"/health", b"")
        assert len(c.conn.streams) == 4 and not c.conn.closing
        c.request(b"GET", b"/health", b"")          # a fifth, past SETTINGS_MAX_CONCURRENT_STREAMS
        assert c.conn.closing and c.t.closing
        assert pb.gw.metrics.http2_goaway.value(("too_many_streams",)) == 1
    run(pb, go())
    pb.close()
