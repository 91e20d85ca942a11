"""Raw-socket HTTP/1.1 client for tests, parsing answers with h11 (an independent parser)."""
from __future__ import annotations

import socket

import h11


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_responses(sock: socket.socket, count: int, methods: list | None = None) -> list:
    """Reads ``count`` responses; returns [(status, {name: value}, body bytes)]."""
    conn = h11.Connection(h11.CLIENT)
    out = []
    for i in range(count):
        # h11 needs to know a request was sent to parse a response
        method = (methods[i] if methods else "GET")
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = None, None, []
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.SEND_BODY:
                    raise ConnectionError("connection closed before the response ended")
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                headers = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h11.Data):
                body.append(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                raise ConnectionError("connection closed")
        out.append((status, headers, b"".join(body)))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            break
    return out


def request(port: int, raw: bytes, count: int = 1, methods: list | None = None) -> list:
    with connect(port) as s:
        s.sendall(raw)
        return read_responses(s, count, methods)


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the peer closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
