"""Keep-alive, pipelining, request framing, disconnects, backpressure and timeouts."""
import json
import socket
import subprocess
import shutil
import time

import pytest

from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def chat_req(body=CHAT, extra=b""):
    return b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_keep_alive_reuses_client_and_worker_connections(gateway):
    before = [w.stats.total_connections for w in gateway.workers]  # start-up model discovery
    with rawhttp.connect(gateway.port) as s:
        for _ in range(20):
            s.sendall(chat_req())
            (st, headers, _), = rawhttp.read_responses(s, 1, ["POST"])
            assert st == 200 and "connection" not in headers
    # 20 requests, round robin over 2 workers, one pooled connection each
    assert [w.stats.total_connections - b for w, b in zip(gateway.workers, before)] == [1, 1]


def test_pipelined_requests_answered_in_order(gateway):
    raw = (chat_req(extra=b"x-request-id: r1\r\n") + b"GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: r2\r\n\r\n"
           + chat_req(extra=b"x-request-id: r3\r\n") + b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-request-id: r4\r\n\r\n"
           + chat_req(body=STREAM, extra=b"x-request-id: r5\r\n"))
    out = rawhttp.request(gateway.port, raw, count=5, methods=["POST", "GET", "POST", "GET", "POST"])
    assert [h["x-request-id"] for _, h, _ in out] == ["r1", "r2", "r3", "r4", "r5"]
    assert [st for st, _, _ in out] == [200] * 5
    assert json.loads(out[3][2])["object"] == "list"
    assert out[4][2].rstrip().endswith(b"data: [DONE]")


def test_expect_100_continue(gateway):
    with rawhttp.connect(gateway.port) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                  b"content-length: %d\r\n\r\n" % len(CHAT))
        interim = s.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(CHAT)
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200 and json.loads(body)["object"] == "chat.completion"


def test_chunked_request_body(gateway):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(CHAT[i:i + 7]), CHAT[i:i + 7]) for i in range(0, len(CHAT), 7))
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    (st, _, body), = rawhttp.request(gateway.port, raw, methods=["POST"])
    assert st == 200
    assert any(w.stats.last_body == json.loads(CHAT) for w in gateway.workers)


def test_http10_client(gateway):
    with rawhttp.connect(gateway.port) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: %d\r\n\r\n%s" % (len(CHAT), CHAT))
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["object"] == "chat.completion"
    # a streamed answer to an HTTP/1.0 client is close-delimited, never chunked
    with rawhttp.connect(gateway.port) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: %d\r\n\r\n%s" % (len(STREAM), STREAM))
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body.rstrip().endswith(b"data: [DONE]")


def test_connection_close_honoured(gateway):
    with rawhttp.connect(gateway.port) as s:
        s.sendall(chat_req(extra=b"connection: close\r\n"))
        (st, headers, _), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200 and headers["connection"] == "close"
        assert rawhttp.closed_by_peer(s)


def test_client_disconnect_mid_stream_closes_upstream(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="slow", token_delay=0.05, num_chunks=200)])
    w = h.workers[0]
    with rawhttp.connect(h.port) as s:
        s.sendall(chat_req(body=STREAM))
        got = s.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
    # the gateway closed its worker connection: the mock saw the stream cancelled
    assert wait_for(lambda: w.stats.cancelled == 1)
    assert w.stats.completed_streams == 0
    assert wait_for(lambda: h.on_loop(lambda: h.gw.registry.all()[0].inflight) == 0)
    assert h.on_loop(lambda: h.gw.registry.all()[0].pool.idle_count) == 0


def test_worker_cut_mid_stream_ends_with_error_event(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_mode="cut", cut_after_chunks=2)])
    with rawhttp.connect(h.port) as s:
        s.sendall(chat_req(body=STREAM))
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200
        events = [e for e in body.split(b"\n\n") if e.strip()]
        assert json.loads(events[-1][len(b"data: "):])["error"]["code"] == "upstream_error"
        assert rawhttp.closed_by_peer(s)


def test_slow_client_does_not_stall_others(make_gateway):
    # a long stream the first client never reads: its socket buffers fill up
    h = make_gateway(workers=[MockConfig(worker_id="a", num_chunks=20000)])
    slow = socket.create_connection(("127.0.0.1", h.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.sendall(chat_req(body=STREAM))
        time.sleep(0.3)
        # the gateway stopped reading from that worker connection; others flow freely
        for _ in range(10):
            (st, _, _), = rawhttp.request(h.port, chat_req(), methods=["POST"])
            assert st == 200
        assert h.on_loop(lambda: h.gw.inflight()) == 1
    finally:
        slow.close()
    assert wait_for(lambda: h.on_loop(lambda: h.gw.inflight()) == 0)


def test_header_read_timeout(make_gateway):
    h = make_gateway(header_read_timeout_secs=0.3)
    with rawhttp.connect(h.port) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # never finishes the head
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 408 and json.loads(body)["error"]["type"] == "timeout_error"
        assert rawhttp.closed_by_peer(s)


def test_idle_connection_timeout(make_gateway):
    h = make_gateway(idle_connection_timeout_secs=0.3)
    with rawhttp.connect(h.port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        rawhttp.read_responses(s, 1)
        assert rawhttp.closed_by_peer(s, timeout=5)


def test_inflight_returns_to_zero_after_errors_and_streams(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b", fail_mode="reset")])
    for body in (CHAT, STREAM, CHAT, STREAM):
        rawhttp.request(h.port, chat_req(body=body), methods=["POST"])
    assert h.on_loop(lambda: [w.inflight for w in h.gw.registry.all()]) == [0, 0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl(gateway):
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", gateway.url + "/v1/chat/completions",
                          "-H", "content-type: application/json", "-d", CHAT.decode()],
                         capture_output=True, timeout=20, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["choices"][0]["message"]["content"]
    out = subprocess.run(["curl", "-sS", "-N", "--max-time", "10", gateway.url + "/v1/chat/completions",
                          "-H", "content-type: application/json", "-d", STREAM.decode()],
                         capture_output=True, timeout=20, check=True).stdout
    assert out.rstrip().endswith(b"data: [DONE]")


def test_half_close_after_the_answer_closes_the_connection(gateway):
    """A client that shuts down its sending side once answered: the gateway closes too.
    (A FIN while the request is still being answered cancels it: test_pipeline.py.)"""
    with rawhttp.connect(gateway.port) as s:
        s.sendall(chat_req(body=STREAM))
        (st, _, body), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200 and body.rstrip().endswith(b"data: [DONE]")
        s.shutdown(socket.SHUT_WR)
        assert rawhttp.closed_by_peer(s)
