"""The request pipeline through a running gateway: bugs adversarial testing found
(clients that leave with a FIN, dripped bodies, split heads after an idle keep-alive,
framing edge cases), HEAD on gateway routes, and role-aware selection."""
import socket
import time

from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


def chat_req(body=CHAT, extra=b"", target=b"/v1/chat/completions", version=b"1.1"):
    return (b"POST %s HTTP/%s\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s"
            % (target, version, len(body), extra, body))


def recv_until_closed(s: socket.socket, limit: float = 5.0) -> bytes:
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def test_fin_before_the_first_byte_cancels_the_worker_request(make_gateway):
    h = make_gateway(workers=[MockConfig(ttft=30.0)], policy="round_robin")
    worker = h.workers[0]
    socks = []
    for i in range(5):
        s = rawhttp.connect(h.port)
        s.sendall(chat_req())
        # the worker is generating
        assert wait_for(lambda: worker.stats.paths.get("/v1/chat/completions", 0) >= i + 1)
        s.shutdown(socket.SHUT_WR)  # then a FIN, not an RST
        socks.append(s)
    # every worker request is cancelled long before its 30 s answer would come
    assert wait_for(lambda: worker.stats.aborted == 5, timeout=10)
    assert wait_for(lambda: h.on_loop(lambda: sum(w.inflight for w in h.gw.registry.all())) == 0)
    for s in socks:
        s.close()


def test_a_dripped_body_is_timed_out(make_gateway):
    h = make_gateway(header_read_timeout_secs=0.5, body_read_min_rate=64)
    s = rawhttp.connect(h.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
    s.settimeout(0.2)
    got = b""
    for _ in range(100):  # one byte every 0.1 s (bounded: 10 s), far below 64 B/s
        try:
            s.sendall(b" ")
        except OSError:
            break
        try:
            got += s.recv(65536)
        except socket.timeout:
            continue
        if got:
            break
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    s.close()


def test_no_false_408_for_a_split_head_after_a_long_idle(make_gateway):
    h = make_gateway(header_read_timeout_secs=0.6, idle_connection_timeout_secs=30)
    with rawhttp.connect(h.port) as s:
        s.sendall(chat_req())
        (st, _, _), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200
        time.sleep(1.5)               # idle for longer than the header timeout
        req = chat_req()
        s.sendall(req[:20])
        time.sleep(0.3)               # a short pause inside the head
        s.sendall(req[20:])
        (st, _, _), = rawhttp.read_responses(s, 1, ["POST"])
        assert st == 200


def test_absolute_form_target_is_accepted(gateway):
    target = b"http://127.0.0.1:%d/v1/chat/completions" % gateway.port
    (st, _, body), = rawhttp.request(gateway.port, chat_req(target=target), methods=["POST"])
    assert st == 200 and b"choices" in body
    assert gateway.workers[0].stats.paths.get("/v1/chat/completions", 0) + \
        gateway.workers[1].stats.paths.get("/v1/chat/completions", 0) >= 1


def test_a_leading_empty_line_is_ignored(gateway):
    (st, _, _), = rawhttp.request(gateway.port, b"\r\n" + chat_req(), methods=["POST"])
    assert st == 200


def test_http10_with_chunked_body_is_refused(gateway):
    raw = (b"POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT))
    with rawhttp.connect(gateway.port) as s:
        s.sendall(raw)
        out = recv_until_closed(s)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


def test_an_absurd_chunk_size_answers_400_at_once(make_gateway):
    h = make_gateway(header_read_timeout_secs=60)  # a 400 within the 5 s read is not the timeout
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff"
    with rawhttp.connect(h.port) as s:
        s.sendall(raw)
        out = recv_until_closed(s)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


def test_a_header_line_ended_by_a_bare_cr_answers_400_at_once(make_gateway):
    h = make_gateway(header_read_timeout_secs=60)
    with rawhttp.connect(h.port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\rx-next: 1")
        out = recv_until_closed(s)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


def test_head_on_gateway_routes(gateway):
    (st, headers, body), = rawhttp.request(gateway.port, b"HEAD /health HTTP/1.1\r\nhost: x\r\n\r\n",
                                            methods=["HEAD"])
    assert st == 200 and body == b"" and int(headers["content-length"]) == 2
    assert headers["content-type"].startswith("text/plain")
    (st, _, body), = rawhttp.request(gateway.port, b"HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
                                      methods=["HEAD"])
    assert st == 200 and body == b""


def test_prefill_and_decode_workers_get_no_regular_traffic(make_gateway):
    h = make_gateway(workers=[MockConfig(), MockConfig(), MockConfig()], policy="round_robin")
    regular, prefill, decode = h.workers
    # re-register two of them as the halves of a disaggregated pair
    for w, role in ((prefill, "prefill"), (decode, "decode")):
        gw_worker = h.on_loop(lambda u=w.url: h.gw.registry.find_url(u))
        h.on_loop(lambda wid=gw_worker.id: h.gw.workers.remove(wid, drain=False))
        h.on_loop(lambda u=w.url, r=role: h.gw.add_worker(u, worker_type=r))
    assert wait_for(lambda: h.on_loop(
        lambda: sorted(w.worker_type for w in h.gw.registry.all() if w.status == "ready")) ==
        ["decode", "prefill", "regular"])
    base = [w.stats.paths.get("/v1/chat/completions", 0) for w in h.workers]
    for _ in range(12):
        (st, _, _), = rawhttp.request(h.port, chat_req(), methods=["POST"])
        assert st == 200
    got = [w.stats.paths.get("/v1/chat/completions", 0) - b for w, b in zip(h.workers, base)]
    assert got == [12, 0, 0]
