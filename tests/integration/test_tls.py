"""TLS on real sockets: HTTPS on the listener (openai SDK, ALPN, client certificates,
certificate reload by call and by SIGHUP) and https workers (trust from
--ca-cert-paths, mutual TLS with --client-cert-path)."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import types

import openai
import pytest

from smg.server.tls import h2_available
from smg.testing.harness import GatewayHarness, LoopThread
from smg.testing.mock_worker import MockConfig, MockWorker, tls_context
from smg.workers.worker import READY
from tests.helpers import wait_for
from tests.tlscerts import make_pki, peer_serial

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def trusting(pki, alpn=None, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca.path)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
    return ctx


def https(port: int, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def get(conn: http.client.HTTPSConnection, path: str = "/health") -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def post_chat(conn, body=CHAT) -> tuple:
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def serial_of(conn: http.client.HTTPSConnection) -> int:
    return peer_serial(conn.sock.getpeercert(True))


@pytest.fixture
def tls_gateway(pki):
    with GatewayHarness(tls_cert_path=pki.server_cert, tls_key_path=pki.server_key) as h:
        yield h


# -- the listener ---------------------------------------------------------------------


def test_openai_sdk_over_tls(tls_gateway, pki):
    h = tls_gateway
    http_client = openai.DefaultHttpxClient(verify=trusting(pki))
    c = openai.OpenAI(base_url=f"https://127.0.0.1:{h.port}/v1", api_key="x", max_retries=0, timeout=10,
                      http_client=http_client)
    raw = c.chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.http_version == "HTTP/1.1"
    resp = raw.parse()
    assert resp.choices[0].message.content and resp.usage.completion_tokens == 8
    with c.chat.completions.with_streaming_response.create(**CHAT, stream=True,
                                                            stream_options={"include_usage": True}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        chunks = list(s.parse())
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].usage.completion_tokens == 8
    assert sum(w.stats.completed_streams for w in h.workers) == 1
    http_client.close()


@pytest.mark.skipif(not h2_available(), reason="smg.server.h2_connection is not importable")
def test_openai_sdk_over_h2_chosen_by_alpn(tls_gateway, pki):
    h = tls_gateway
    http_client = openai.DefaultHttpxClient(verify=trusting(pki), http2=True)
    c = openai.OpenAI(base_url=f"https://127.0.0.1:{h.port}/v1", api_key="x", max_retries=0, timeout=10,
                      http_client=http_client)
    raw = c.chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.http_version == "HTTP/2"
    assert raw.parse().choices[0].message.content
    with c.chat.completions.with_streaming_response.create(**CHAT, stream=True) as s:
        assert s.http_response.http_version == "HTTP/2"
        assert "".join(ch.choices[0].delta.content or "" for ch in s.parse() if ch.choices)
    http_client.close()


def test_plain_http_to_the_tls_listener_gets_no_answer(tls_gateway):
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("offer, expect", [
    (["http/1.1"], "http/1.1"),
    (None, None),
    (["h2", "http/1.1"], "h2" if h2_available() else "http/1.1"),
])
def test_alpn(tls_gateway, pki, offer, expect):
    ctx = trusting(pki, offer)
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == expect
            if expect != "h2":
                s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200")


class _FakeH2(asyncio.Protocol):
    """Stands in for smg.server.h2_connection.H2ServerConnection: echoes what it gets."""

    made: list = []

    def __init__(self, site, transport, initial: bytes = b"") -> None:
        self.transport = transport
        _FakeH2.made.append((site, initial))
        transport.set_protocol(self)  # as the real one: it takes the transport over

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"h2 got " + data)


def test_alpn_h2_hands_the_connection_to_the_h2_server(pki, monkeypatch):
    fake = types.ModuleType("smg.server.h2_connection")
    fake.H2ServerConnection = _FakeH2
    monkeypatch.setitem(sys.modules, "smg.server.h2_connection", fake)
    _FakeH2.made = []
    with GatewayHarness(tls_cert_path=pki.server_cert, tls_key_path=pki.server_key) as h:
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as raw:
            with trusting(pki, ["h2", "http/1.1"]).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.selected_alpn_protocol() == "h2"
                s.sendall(b"PRI * HTTP/2.0")
                assert s.recv(100) == b"h2 got PRI * HTTP/2.0"
        assert [site for site, _ in _FakeH2.made] == [h.gw.site]
        # an HTTP/1.1 client on the same listener is still served here
        c = https(h.port, trusting(pki, ["http/1.1"]))
        assert get(c) == 200
        c.close()
        assert len(_FakeH2.made) == 1


def test_reload_serves_the_new_certificate_while_open_connections_keep_working(pki, tmp_path):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    with GatewayHarness(tls_cert_path=cert, tls_key_path=key) as h:
        old = https(h.port, trusting(pki))
        assert post_chat(old)[0] == 200 and serial_of(old) == pki.server_serial
        c2, k2, serial2 = pki.ca.issue("server-2")
        shutil.copy(c2, cert)
        shutil.copy(k2, key)
        assert h.gw.reload_tls() is True
        new = https(h.port, trusting(pki))
        assert get(new) == 200 and serial_of(new) == serial2
        # the keep-alive connection opened before the reload: same socket, old certificate
        sock = old.sock
        assert post_chat(old)[0] == 200 and old.sock is sock and serial_of(old) == pki.server_serial
        # a broken file: reload refused, the current certificate stays
        (tmp_path / "live.key").write_text("broken\n")
        assert h.gw.reload_tls() is False
        third = https(h.port, trusting(pki))
        assert get(third) == 200 and serial_of(third) == serial2
        for c in (old, new, third):
            c.close()


def test_client_certificate_required_on_the_listener(pki):
    with GatewayHarness(tls_cert_path=pki.server_cert, tls_key_path=pki.server_key,
                        tls_client_ca_path=pki.ca.path) as h:
        anonymous = https(h.port, trusting(pki))
        with pytest.raises(OSError):  # ssl.SSLError, or the reset it causes (TLS 1.3)
            get(anonymous)
        anonymous.close()
        with_cert = https(h.port, trusting(pki, cert=True))
        assert post_chat(with_cert)[0] == 200
        with_cert.close()
        assert sum(w.stats.requests for w in h.workers) >= 1


# -- SIGHUP through the command line --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _https_status(port: int, ctx) -> tuple:
    """(status, certificate serial) of one new connection, or (None, None)."""
    c = https(port, ctx)
    try:
        return get(c, "/readiness"), serial_of(c)
    except OSError:
        return None, None
    finally:
        c.close()


def test_sighup_reloads_the_certificate(pki, tmp_path):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", str(port),
                          "--prometheus-port", "0", "--tls-cert-path", cert, "--tls-key-path", key],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    ctx = trusting(pki)
    try:
        assert wait_for(lambda: _https_status(port, ctx)[0] == 200, timeout=20, interval=0.1)
        assert any(f"listening on https://127.0.0.1:{port}".encode() in ln for ln in lines)
        old = https(port, ctx)
        assert get(old) == 200 and serial_of(old) == pki.server_serial
        c2, k2, serial2 = pki.ca.issue("server-hup")
        shutil.copy(c2, cert)
        shutil.copy(k2, key)
        p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _https_status(port, ctx) == (200, serial2), timeout=10, interval=0.05)
        assert p.poll() is None  # SIGHUP reloads; it does not end the process
        assert get(old) == 200 and serial_of(old) == pki.server_serial
        old.close()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        reader.join(5)
    assert p.returncode == 0


def test_bad_tls_material_fails_at_start_naming_the_flag(tmp_path, pki):
    bad = tmp_path / "bad.pem"
    bad.write_text("nope\n")
    r = subprocess.run([sys.executable, "-m", "smg", "--port", "0", "--prometheus-port", "0",
                        "--tls-cert-path", str(bad), "--tls-key-path", pki.server_key,
                        "--worker-urls", "http://127.0.0.1:9"], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert b"--tls-cert-path" in r.stderr and b"Traceback" not in r.stderr


# -- https workers ----------------------------------------------------------------------


@contextlib.contextmanager
def tls_worker(pki, client_ca: str = "", **config):
    """A mock worker serving HTTPS on its own loop thread."""
    lt = LoopThread()
    w = MockWorker(MockConfig(**config))
    try:
        lt.run(w.start("127.0.0.1", 0, ssl=tls_context(pki.server_cert, pki.server_key, client_ca)))
        yield w
    finally:
        lt.run(w.stop())
        lt.stop()


FAST_PROBES = dict(health_check_interval_secs=0.05, worker_startup_check_interval=0.05, load_monitor_interval=0.05,
                   worker_registration_max_backoff_secs=0.1)


def _plain(h) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)


def test_https_worker_is_proxied_probed_and_polled(pki):
    with tls_worker(pki, worker_id="tw") as w, \
            GatewayHarness(workers=[], extra_worker_urls=[w.url], ca_cert_paths=[pki.ca.path], **FAST_PROBES) as h:
        assert w.url.startswith("https://127.0.0.1:")
        h.run(h.gw.wait_ready(10))
        c = _plain(h)
        for _ in range(3):
            c.request("POST", "/v1/chat/completions", json.dumps(CHAT), {"content-type": "application/json"})
            r = c.getresponse()
            body = json.loads(r.read())
            assert r.status == 200 and r.getheader("x-mock-worker") == "tw" and body["choices"]
        c.close()
        assert w.stats.paths.get("/v1/chat/completions") == 3
        pool = h.on_loop(lambda: h.gw.registry.all()[0].pool)
        # one TLS connection, kept alive across the three requests
        assert h.on_loop(lambda: (pool.open, pool.idle_count)) == (1, 1)
        assert wait_for(lambda: w.stats.paths.get("/health", 0) >= 3)
        assert wait_for(lambda: w.stats.paths.get("/v1/loads", 0) >= 2)
        gw_worker = h.on_loop(lambda: h.gw.registry.all()[0])
        assert wait_for(lambda: gw_worker.engine is not None)
        assert gw_worker.status == READY and gw_worker.port == w.port


def test_https_worker_untrusted_without_its_ca(pki):
    with tls_worker(pki) as w, \
            GatewayHarness(workers=[], extra_worker_urls=[w.url], disable_retries=True, **FAST_PROBES) as h:
        c = _plain(h)
        status, _ = post_chat(c)
        c.close()
        assert status >= 500
        assert h.on_loop(lambda: h.gw.registry.all()[0].status) != READY
        assert w.stats.requests == 0  # no handshake ever completed: nothing reached the worker


def test_mtls_worker_refuses_the_gateway_without_a_client_certificate(pki):
    with tls_worker(pki, client_ca=pki.ca.path) as w:
        with GatewayHarness(workers=[], extra_worker_urls=[w.url], ca_cert_paths=[pki.ca.path],
                            disable_retries=True, **FAST_PROBES) as h:
            c = _plain(h)
            status, _ = post_chat(c)
            c.close()
            assert status >= 500
            assert h.on_loop(lambda: h.gw.registry.all()[0].status) != READY
            assert w.stats.requests == 0
        with GatewayHarness(workers=[], extra_worker_urls=[w.url], ca_cert_paths=[pki.ca.path],
                            client_cert_path=pki.client_cert, client_key_path=pki.client_key, **FAST_PROBES) as h:
            h.run(h.gw.wait_ready(10))
            c = _plain(h)
            status, body = post_chat(c)
            c.close()
            assert status == 200 and body["choices"]
            assert w.stats.paths.get("/v1/chat/completions") == 1
            assert wait_for(lambda: w.stats.paths.get("/health", 0) >= 2)
            # the load monitor's polls go over the same mutual TLS, and their reports land
            assert wait_for(lambda: w.stats.paths.get("/v1/loads", 0) >= 2)
            gw_worker = h.on_loop(lambda: h.gw.registry.all()[0])
            assert wait_for(lambda: h.on_loop(lambda: gw_worker.engine) is not None)
            assert h.on_loop(lambda: gw_worker.engine)["source"] == "v1/loads"
