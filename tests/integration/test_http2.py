"""HTTP/2 on the listener (h2c with prior knowledge), with real clients over 127.0.0.1:
httpx (http2=True), h2load when installed, and the h2 library's own client on a raw
socket driving the floods and edge cases. Every flood must end its connection with
GOAWAY while the gateway goes on serving everyone else."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import httpx
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged, ResponseReceived,
                       SettingsAcknowledged, StreamEnded, StreamReset)
from h2.exceptions import ProtocolError
from hpack import Decoder, Encoder
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from smg.server import h2_stream
from smg.server.h2_connection import H2ServerConnection
from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
CHAT_B = json.dumps(CHAT).encode()
STREAM_B = json.dumps(dict(CHAT, stream=True)).encode()
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class RawH2:
    """The h2 library's client over a blocking socket; every read is bounded."""

    def __init__(self, port: int, ack: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**24)  # as httpx does: streams limit, not the connection
        self.ack = ack              # give DATA windows back as it arrives (except ``stalled`` streams)
        self.stalled: set = set()
        self.events: list = []
        self.closed = False
        self.error = None
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def request(self, path: bytes = b"/v1/chat/completions", body: bytes = CHAT_B, method: bytes = b"POST",
                extra: list | None = None, flush: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(b":method", method), (b":path", path), (b":scheme", b"http"), (b":authority", b"gw")]
        if body:
            hdrs.append((b"content-type", b"application/json"))
        hdrs += extra or []
        self.h2.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h2.send_data(sid, body, end_stream=True)
        if flush:
            self.flush()
        return sid

    def read_until(self, pred, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return pred()
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return pred()
            except OSError:
                self.closed = True
                continue
            if not data:
                self.closed = True
                continue
            try:
                evs = self.h2.receive_data(data)
            except ProtocolError as e:  # frames after a GOAWAY the client itself sent
                self.error = e
                evs = []
            self.events.extend(evs)
            for e in evs:
                if isinstance(e, DataReceived) and self.ack and e.stream_id not in self.stalled:
                    self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            try:
                self.flush()
            except OSError:
                self.closed = True
        return True

    def of(self, sid: int, kind) -> list:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", None) == sid]

    def ended(self, sid: int) -> bool:
        return bool(self.of(sid, StreamEnded) or self.of(sid, StreamReset))

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(sid, DataReceived))

    def status(self, sid: int) -> int:
        (r,) = self.of(sid, ResponseReceived)
        return int(dict(r.headers)[b":status"])

    def goaway(self):
        g = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        return g[0] if g else None


def h2_connections(h) -> list:
    return h.on_loop(lambda: [c for c in h.gw.site.connections if isinstance(c, H2ServerConnection)])


def metric(h, line_start: str) -> float | None:
    text = urllib.request.urlopen(h.metrics_url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def still_serving(h) -> None:
    """A fresh HTTP/2 connection and an HTTP/1.1 one are both answered."""
    c = RawH2(h.port)
    sid = c.request(b"/health", b"", b"GET")
    assert c.read_until(lambda: c.ended(sid)) and c.status(sid) == 200
    c.close()
    r = httpx.get(h.url + "/health", timeout=10)
    assert r.status_code == 200 and r.http_version == "HTTP/1.1"


# -- real clients ---------------------------------------------------------------------

def test_httpx_chat_streaming_and_not(gateway):
    with httpx.Client(http1=False, http2=True, base_url=gateway.url, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert r.json()["object"] == "chat.completion" and r.headers["x-request-id"].startswith("chatcmpl-")
        assert int(r.headers["content-length"]) == len(r.content)
        with c.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 5
        assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"
        r = c.post("/v1/chat/completions", json={"model": "mock-model"})
        err = r.json()["error"]
        assert r.status_code == 400 and (err["code"], err["param"]) == ("missing_required_parameter", "messages")
        for name in ("connection", "keep-alive", "transfer-encoding", "upgrade"):
            assert name not in r.headers


def test_100_concurrent_streams_on_one_connection(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", ttft=1.5), MockConfig(worker_id="w2", ttft=1.5)])
    peak = []

    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, base_url=h.url, timeout=30,
                                     limits=httpx.Limits(max_connections=1)) as c:
            tasks = [asyncio.ensure_future(c.post("/v1/chat/completions", json=CHAT)) for _ in range(100)]
            for _ in range(500):
                n = h.on_loop(lambda: sum(x.stream_count for x in h.gw.site.connections
                                          if isinstance(x, H2ServerConnection)))
                peak.append(n)
                if n >= 100 or all(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            return await asyncio.gather(*tasks)

    out = asyncio.run(main())
    assert [r.status_code for r in out] == [200] * 100
    assert len({r.headers["x-request-id"] for r in out}) == 100
    assert max(peak) == 100  # all of them in flight at once, on one connection
    assert metric(h, "smg_http2_streams_total") == 100


def test_client_hanging_up_mid_stream_aborts_the_worker(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", token_delay=0.05, num_chunks=400)])
    w = h.workers[0]
    with httpx.Client(http1=False, http2=True, base_url=h.url, timeout=10) as c:
        with c.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
            it = r.iter_lines()
            assert next(it).startswith("data: ")
    # the client closed its connection: every stream on it is aborted, the engine stops
    assert wait_for(lambda: w.stats.cancelled == 1)
    assert wait_for(lambda: h.on_loop(lambda: h.gw.registry.all()[0].inflight) == 0)


def test_rst_stream_mid_answer_aborts_the_worker_and_the_connection_goes_on(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", token_delay=0.05, num_chunks=400)])
    w = h.workers[0]
    c = RawH2(h.port)
    sid = c.request(body=STREAM_B)
    assert c.read_until(lambda: len(c.body(sid)) > 0)
    c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.flush()
    assert wait_for(lambda: w.stats.cancelled == 1)
    sid2 = c.request(b"/get_model_info", b"", b"GET")  # proxied too, answered at once
    assert c.read_until(lambda: c.ended(sid2)) and c.status(sid2) == 200
    assert json.loads(c.body(sid2))
    assert c.goaway() is None
    c.close()
    assert wait_for(lambda: metric(h, 'smg_http2_stream_resets_total{reason="cancel",side="client"}') == 1)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load(gateway, tmp_path):
    body = tmp_path / "chat.json"
    body.write_bytes(CHAT_B)
    out = subprocess.run(["h2load", "-n", "300", "-c", "3", "-m", "10", "-d", str(body),
                          "-H", "content-type: application/json", gateway.url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=60)
    assert "Application protocol: h2c" in out.stdout
    assert "300 succeeded, 0 failed, 0 errored, 0 timeout" in out.stdout, out.stdout
    assert "status codes: 300 2xx" in out.stdout


def test_errors_before_the_head_are_ordinary_answers(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", fail_status=503)], retry_max_retries=1)
    c = RawH2(h.port)
    sid = c.request()
    assert c.read_until(lambda: c.ended(sid))
    assert c.status(sid) == 503 and c.of(sid, StreamEnded) and not c.of(sid, StreamReset)
    assert c.goaway() is None
    c.close()


def test_a_stream_cut_by_the_worker_ends_with_the_error_event(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", fail_mode="cut", cut_after_chunks=3)])
    with httpx.Client(http1=False, http2=True, base_url=h.url, timeout=10) as c:
        with c.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
            assert r.status_code == 200
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        # the worker's events, then the gateway's error event, then a clean END_STREAM
        assert len(events) == 4 and json.loads(events[-1][6:])["error"]["code"] == "upstream_error"
        assert c.get("/health").status_code == 200  # the connection is fine


def test_shutdown_lets_an_open_stream_finish_within_the_grace(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", token_delay=0.02, num_chunks=25)])
    w = h.workers[0]
    c = RawH2(h.port, ack=True)
    sid = c.request(body=STREAM_B)
    assert c.read_until(lambda: len(c.body(sid)) > 0)
    done = []
    fut = asyncio.run_coroutine_threadsafe(h.gw.shutdown(10), h.lt.loop)
    fut.add_done_callback(lambda f: done.append(f.exception()))
    # GOAWAY first; the client's h2 then refuses further frames, so count on the worker
    assert c.read_until(lambda: c.goaway() is not None)
    assert c.goaway().error_code == ErrorCodes.NO_ERROR and c.goaway().last_stream_id == sid
    assert wait_for(lambda: done == [None], timeout=15)
    assert w.stats.completed_streams == 1 and w.stats.cancelled == 0
    c.close()


# -- flow control ------------------------------------------------------------------------

def test_zero_window_stream_stays_bounded_while_others_flow(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", num_chunks=40000)],
                     http2_zero_window_timeout_secs=3.0)
    w = h.workers[0]
    c = RawH2(h.port)
    stuck = c.request(body=STREAM_B)
    c.stalled.add(stuck)  # never read: its window stays at zero
    assert c.read_until(lambda: len(c.body(stuck)) >= 65535)
    assert len(c.body(stuck)) == 65535  # exactly the stream's initial window, never more

    def held() -> int:
        conn = h2_connections(h)[0]
        return h.on_loop(lambda: max((s.backlog_len for s in conn.streams.values()), default=0)
                         + conn.transport.get_write_buffer_size())

    # other streams on the same connection keep flowing, streamed and not
    for body in (CHAT_B, STREAM_B, CHAT_B, STREAM_B):
        sid = c.request(body=body)
        assert c.read_until(lambda: c.ended(sid)) and c.status(sid) == 200 and not c.of(sid, StreamReset)
        assert held() <= h2_stream.BACKLOG_HIGH + 262144  # the bound plus at most one upstream read
    assert w.stats.completed_streams >= 2
    assert metric(h, "smg_http2_streams_active") == 1  # only the stuck one is open
    # the stuck stream is reset once it has made no progress for the timeout
    assert c.read_until(lambda: c.ended(stuck), timeout=15)
    (rst,) = c.of(stuck, StreamReset)
    assert rst.error_code == ErrorCodes.CANCEL
    assert wait_for(lambda: w.stats.cancelled == 1)
    sid = c.request()
    assert c.read_until(lambda: c.ended(sid)) and c.status(sid) == 200
    c.close()


# -- floods and edge cases (the h2 client, or raw frames, on a raw socket) ------------------

@pytest.fixture
def strict(make_gateway):
    return make_gateway(http2_max_resets_per_window=20, http2_max_pings_per_window=10,
                        http2_max_settings_per_window=5, http2_max_header_list_size=8192)


def expect_goaway(c: RawH2, code) -> None:
    assert c.read_until(lambda: c.goaway() is not None or c.closed)
    g = c.goaway()
    assert g is not None and g.error_code == code
    assert c.read_until(lambda: c.closed)  # and the connection is closed
    c.close()


def test_rapid_reset_ends_the_connection(strict):
    c = RawH2(strict.port)
    for _ in range(40):
        sid = c.request(body=CHAT_B, flush=False)
        c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.flush()
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="rapid_reset"}') == 1
    assert wait_for(lambda: strict.on_loop(lambda: sum(w.inflight for w in strict.gw.registry.all())) == 0)


def test_ping_flood_ends_the_connection(strict):
    c = RawH2(strict.port)
    for i in range(30):
        c.h2.ping(b"%08d" % i)
    c.flush()
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="ping_flood"}') == 1


def test_pings_within_the_limit_are_answered(strict):
    c = RawH2(strict.port)
    for i in range(5):
        c.h2.ping(b"%08d" % i)
    c.flush()
    from h2.events import PingAckReceived
    assert c.read_until(lambda: len([e for e in c.events if isinstance(e, PingAckReceived)]) == 5)
    assert c.goaway() is None
    c.close()


def test_settings_flood_ends_the_connection(strict):
    c = RawH2(strict.port)
    for i in range(12):
        c.h2.update_settings({0x3: 100 + i})
    c.flush()
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="settings_flood"}') == 1


def test_continuation_flood_ends_the_connection(strict):
    c = RawH2(strict.port)
    block = Encoder().encode([(b":method", b"GET"), (b":path", b"/health"), (b":scheme", b"http")])
    frames = [HeadersFrame(1, data=block, flags=["END_STREAM"]).serialize()]
    frames += [ContinuationFrame(1, data=b"\x00" * 64).serialize() for _ in range(400)]  # never END_HEADERS
    c.sock.sendall(b"".join(frames))
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="header_block"}') == 1


def test_hpack_bomb_ends_the_connection(strict):
    c = RawH2(strict.port)
    # one 4 KB field put in the dynamic table, then referenced by a one-byte index:
    # a 4 KB header block that decodes to 400 KB
    bomb = [(b"x-bomb", b"a" * 4000)] * 100
    c.request(b"/health", b"", b"GET", extra=bomb)
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="header_list"}') == 1


def test_over_long_frame_ends_the_connection(strict):
    c = RawH2(strict.port)
    c.sock.sendall((100000).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"))
    expect_goaway(c, ErrorCodes.FRAME_SIZE_ERROR)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="frame_size"}') == 1


def test_header_injection_is_a_protocol_error_and_never_reaches_a_worker(strict):
    w = strict.workers[0]
    before = w.stats.requests + strict.workers[1].stats.requests
    c = RawH2(strict.port)
    sid = c.h2.get_next_available_stream_id()
    # the h2 client refuses to send this itself: encode the block by hand
    block = c.h2.encoder.encode([(b":method", b"GET"), (b":path", b"/get_model_info"), (b":scheme", b"http"),
                                 (b":authority", b"gw"), (b"x-a", b"1\r\nx-injected: yes")])
    c.sock.sendall(HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    expect_goaway(c, ErrorCodes.PROTOCOL_ERROR)
    still_serving(strict)
    assert w.stats.requests + strict.workers[1].stats.requests == before


_GET_INFO = [(b":method", b"GET"), (b":path", b"/get_model_info"), (b":scheme", b"http"), (b":authority", b"gw")]


@pytest.mark.parametrize("fields", [
    _GET_INFO[:3],                                        # neither :authority nor host
    [_GET_INFO[0], _GET_INFO[2], _GET_INFO[3]],           # no :path
    _GET_INFO + [(b"X-Upper", b"1")],                     # an upper-case name
    _GET_INFO + [(b"transfer-encoding", b"chunked")],     # connection-specific
    _GET_INFO + [(b"te", b"gzip")],
    _GET_INFO + [(b"host", b"elsewhere")],                # host differs from :authority
    _GET_INFO + [(b"x-a", b" padded")],                   # a value with surrounding whitespace
    [_GET_INFO[0], (b"x-a", b"1")] + _GET_INFO[1:],       # a pseudo-header after a regular field
    _GET_INFO + [(b":status", b"200")],                   # a response pseudo-header
], ids=["no-authority", "no-path", "uppercase", "transfer-encoding", "te", "host-mismatch", "whitespace",
        "pseudo-late", "status"])
def test_malformed_requests_are_protocol_errors_and_never_reach_a_worker(strict, fields):
    """h2's inbound validation is off (smg/server/h2_hpack.py): the gateway's own checks
    refuse what it refused, with the same GOAWAY PROTOCOL_ERROR."""
    before = sum(w.stats.requests for w in strict.workers)
    c = RawH2(strict.port)
    block = c.h2.encoder.encode(fields)  # the h2 client would refuse to send these itself
    c.sock.sendall(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    expect_goaway(c, ErrorCodes.PROTOCOL_ERROR)
    still_serving(strict)
    assert metric(strict, 'smg_http2_goaway_total{reason="protocol_error"}') == 1
    assert sum(w.stats.requests for w in strict.workers) == before


def test_pseudo_headers_in_trailers_end_the_connection(strict):
    c = RawH2(strict.port)
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                            (b":authority", b"gw"), (b"content-type", b"application/json")])
    c.h2.send_data(sid, CHAT_B)
    c.flush()
    trailers = c.h2.encoder.encode([(b":path", b"/other")])
    c.sock.sendall(HeadersFrame(sid, data=trailers, flags=["END_HEADERS", "END_STREAM"]).serialize())
    expect_goaway(c, ErrorCodes.PROTOCOL_ERROR)
    still_serving(strict)


def test_repeated_identical_requests_on_one_connection_are_all_answered(gateway):
    """The second and later copies of a request head are all HPACK indexes, decoded from
    the decoder's memo: each still gets its own answer and request id."""
    c = RawH2(gateway.port)
    sids = [c.request() for _ in range(5)]
    assert c.read_until(lambda: all(c.ended(s) for s in sids))
    rids = set()
    for sid in sids:
        assert c.status(sid) == 200 and json.loads(c.body(sid))["choices"]
        (r,) = c.of(sid, ResponseReceived)
        rids.add(dict(r.headers)[b"x-request-id"])
    assert len(rids) == 5
    c.close()


def test_server_settings_carry_the_window_and_frame_size_flags(make_gateway):
    h = make_gateway(http2_initial_window_size=1_000_000, http2_max_frame_size=65536,
                     http2_max_concurrent_streams=7, http2_max_header_list_size=12345)
    c = RawH2(h.port)
    assert c.read_until(lambda: c.h2.remote_settings.initial_window_size == 1_000_000
                        and c.h2.outbound_flow_control_window == 1_000_000)
    rs = c.h2.remote_settings
    assert (rs.max_frame_size, rs.max_concurrent_streams, rs.max_header_list_size) == (65536, 7, 12345)
    # and the gateway holds to them: a 300 KB body in 64 KB frames — past the RFC's
    # default window and frame size — goes in one write, with no WINDOW_UPDATE waited for
    body = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                            (b":authority", b"gw"), (b"content-type", b"application/json")])
    for i in range(0, len(body), 65536):
        c.h2.send_data(sid, body[i:i + 65536], end_stream=i + 65536 >= len(body))
    c.flush()
    assert c.read_until(lambda: c.ended(sid)) and c.status(sid) == 200
    assert c.goaway() is None
    c.close()


def test_a_header_block_left_open_ends_the_connection_after_the_header_timeout(make_gateway):
    h = make_gateway(header_read_timeout_secs=0.3)
    c = RawH2(h.port)
    # the SETTINGS exchange done first: any frame but CONTINUATION inside a header block
    # would be a protocol error of its own
    assert c.read_until(lambda: any(isinstance(e, SettingsAcknowledged) for e in c.events)
                        and any(isinstance(e, RemoteSettingsChanged) for e in c.events))
    block = c.h2.encoder.encode(_GET_INFO)
    c.sock.sendall(HeadersFrame(1, data=block[:3]).serialize())  # no END_HEADERS, no CONTINUATION
    expect_goaway(c, ErrorCodes.ENHANCE_YOUR_CALM)
    assert metric(h, 'smg_http2_goaway_total{reason="header_timeout"}') == 1
    still_serving(h)


def test_a_body_over_the_limit_is_answered_413_and_stopped(make_gateway):
    h = make_gateway(max_payload_size=2048)
    c = RawH2(h.port)
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b":scheme", b"http"),
                            (b":authority", b"gw")])
    c.h2.send_data(sid, b" " * 3000)
    c.flush()
    assert c.read_until(lambda: c.of(sid, StreamReset))
    assert c.status(sid) == 413 and b"maximum payload size" in c.body(sid)
    assert c.of(sid, StreamReset)[0].error_code == ErrorCodes.NO_ERROR
    sid = c.request()
    assert c.read_until(lambda: c.ended(sid)) and c.status(sid) == 200
    c.close()


def test_too_many_concurrent_streams_ends_the_connection(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1", ttft=5.0)], http2_max_concurrent_streams=4)
    c = RawH2(h.port)
    # the client honours the server's SETTINGS once it has read them: skip that check
    c.read_until(lambda: c.h2.remote_settings.max_concurrent_streams == 4)
    c.h2.remote_settings.max_concurrent_streams = 1000
    c.h2.remote_settings.acknowledge()
    for _ in range(6):
        c.request(flush=False)
    c.flush()
    expect_goaway(c, ErrorCodes.PROTOCOL_ERROR)
    still_serving(h)
    assert wait_for(lambda: h.on_loop(lambda: sum(w.inflight for w in h.gw.registry.all())) == 0)


# -- the connection's life ---------------------------------------------------------------

class FrameReader:
    """Reads the server's frames with hyperframe (no client state machine: h2's client
    accepts nothing after a GOAWAY, while a draining server still finishes its streams)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.frames: list = []
        self.decoder = Decoder()
        self.closed = False

    def read_until(self, pred, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not pred() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                self.closed = True
                break
            self.buf += data
            while len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                f.parse_body(memoryview(self.buf[9:9 + length]))
                del self.buf[:9 + length]
                if isinstance(f, HeadersFrame):
                    f.headers = dict(self.decoder.decode(f.data, raw=True))
                self.frames.append(f)
        return pred()

    def of(self, sid: int, kind) -> list:
        return [f for f in self.frames if isinstance(f, kind) and f.stream_id == sid]


def raw_request(enc: Encoder, sid: int, path: bytes = b"/v1/chat/completions", body: bytes = CHAT_B) -> bytes:
    from hyperframe.frame import DataFrame
    block = enc.encode([(b":method", b"POST"), (b":path", path), (b":scheme", b"http"), (b":authority", b"gw")])
    return (HeadersFrame(sid, data=block, flags=["END_HEADERS"]).serialize()
            + DataFrame(sid, data=body, flags=["END_STREAM"]).serialize())


def test_drain_goaway_lets_open_streams_finish_and_refuses_new_ones(make_gateway):
    from hyperframe.frame import DataFrame, SettingsFrame
    h = make_gateway(workers=[MockConfig(worker_id="w1", token_delay=0.02, num_chunks=20)])
    s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
    enc = Encoder()
    s.sendall(PREFACE + SettingsFrame(0).serialize() + raw_request(enc, 1, body=STREAM_B))
    r = FrameReader(s)
    assert r.read_until(lambda: r.of(1, HeadersFrame))
    h.on_loop(lambda: [c.drain() for c in list(h.gw.site.connections)])  # what shutdown does first
    assert r.read_until(lambda: [f for f in r.frames if isinstance(f, GoAwayFrame)])
    (ga,) = [f for f in r.frames if isinstance(f, GoAwayFrame)]
    assert ga.error_code == 0 and ga.last_stream_id == 1
    s.sendall(raw_request(enc, 3))  # opened after the GOAWAY: refused
    assert r.read_until(lambda: r.of(3, RstStreamFrame))
    assert r.of(3, RstStreamFrame)[0].error_code == ErrorCodes.REFUSED_STREAM
    # the open stream runs to its end, then the connection closes
    assert r.read_until(lambda: r.closed, timeout=15)
    body = b"".join(f.data for f in r.of(1, DataFrame))
    assert body.rstrip().endswith(b"data: [DONE]") and any("END_STREAM" in f.flags for f in r.of(1, DataFrame))
    s.close()
    # the closing GOAWAY never names a later stream than the draining one did
    assert [f.last_stream_id for f in r.frames if isinstance(f, GoAwayFrame)] == [1, 1]
    assert h.workers[0].stats.completed_streams == 1 and h.workers[0].stats.cancelled == 0


def test_idle_connection_gets_goaway_and_is_closed(make_gateway):
    h = make_gateway(idle_connection_timeout_secs=0.3)
    c = RawH2(h.port)
    sid = c.request(b"/health", b"", b"GET")
    assert c.read_until(lambda: c.ended(sid))
    assert metric(h, 'smg_http_protocol_connections_active{protocol="h2"}') == 1
    expect_goaway(c, ErrorCodes.NO_ERROR)
    assert metric(h, 'smg_http2_goaway_total{reason="idle"}') == 1
    assert metric(h, 'smg_http_protocol_connections_active{protocol="h2"}') == 0


def test_preface_split_across_reads_is_still_http2(gateway):
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(PREFACE[:10])
    time.sleep(0.2)
    from hyperframe.frame import SettingsFrame
    s.sendall(PREFACE[10:] + SettingsFrame(0).serialize() + raw_request(Encoder(), 1, b"/v1/chat/completions"))
    r = FrameReader(s)
    assert r.read_until(lambda: any("END_STREAM" in f.flags for f in r.of(1, Frame)))
    assert r.of(1, HeadersFrame)[0].headers[b":status"] == b"200"
    s.close()


def test_an_http1_request_with_method_pri_is_still_http1(gateway):
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(b"PRI /health HTTP/1.1\r\nhost: x\r\n\r\n")
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 405 ")
    s.close()


def test_upgrade_h2c_is_not_offered_the_request_is_answered_as_http1(gateway):
    """RFC 9113 deprecates the h2c upgrade: the request is answered over HTTP/1.1 (no 101)
    and the connection stays HTTP/1.1."""
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
              b"http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")  # still HTTP/1.1 on the same connection
    more = b""
    while b"HTTP/1.1 200 " not in more:
        chunk = s.recv(4096)
        assert chunk
        more += chunk
    s.close()
