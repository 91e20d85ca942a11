"""TLS contexts without sockets: handshakes over memory BIOs between the listener's
context (smg/server/tls.py) and clients, and the worker client context
(smg/upstream/tls.py) against servers made from the test CA."""
from __future__ import annotations

import logging
import shutil
import ssl

import pytest

from smg.config.load import build_config
from smg.errors import ConfigError
from smg.server import tls as server_tls
from smg.server.tls import ServerTLS, server_context
from smg.upstream.pool import UpstreamPool
from smg.upstream.tls import WorkerTLS, client_context
from smg.workers.worker import Worker
from tests.tlscerts import make_pki, peer_serial


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str | None = "127.0.0.1"):
    """Runs a TLS handshake in memory; returns (client SSLObject, server SSLObject).

    Raises the ssl error of whichever side fails first.
    """
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    # TLS 1.3: the server's verdict on a client certificate reaches the client after
    # its own handshake ended; one exchange of application data surfaces it
    client.write(b"ping")
    s_in.write(c_out.read())
    assert server.read(4) == b"ping"
    return client, server


def client_for(pki, alpn=None, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca.path)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
    return ctx


# -- the listener ---------------------------------------------------------------------


def test_alpn_offers_h2_only_when_the_h2_server_imports(pki, monkeypatch):
    monkeypatch.setattr(server_tls, "h2_available", lambda: False)
    plain = ServerTLS(pki.server_cert, pki.server_key)
    assert plain.alpn == ["http/1.1"]
    c, _ = handshake(plain.context, client_for(pki, ["h2", "http/1.1"]))
    assert c.selected_alpn_protocol() == "http/1.1"
    monkeypatch.setattr(server_tls, "h2_available", lambda: True)
    both = ServerTLS(pki.server_cert, pki.server_key)
    assert both.alpn == ["h2", "http/1.1"]
    c, _ = handshake(both.context, client_for(pki, ["http/1.1", "h2"]))
    assert c.selected_alpn_protocol() == "h2"  # the server's preference wins
    c, _ = handshake(both.context, client_for(pki, ["http/1.1"]))
    assert c.selected_alpn_protocol() == "http/1.1"
    c, _ = handshake(both.context, client_for(pki))
    assert c.selected_alpn_protocol() is None  # no ALPN: HTTP/1.1 by default


def test_h2_available_follows_the_module():
    try:
        import smg.server.h2_connection  # noqa: F401
        expected = True
    except ImportError:
        expected = False
    assert server_tls.h2_available() is expected
    assert server_tls.alpn_protocols() == (["h2", "http/1.1"] if expected else ["http/1.1"])


def test_reload_from_new_paths_or_keeps_the_old_ones(pki, tmp_path):
    t = ServerTLS(pki.server_cert, pki.server_key)
    c2, k2, serial2 = pki.ca.issue("server-2")
    missing = str(tmp_path / "missing.crt")
    assert t.reload_from(missing, k2) is False  # a configuration reload naming a missing file
    assert (t.cert_path, t.key_path) == (pki.server_cert, pki.server_key) and t.reloads == 0
    assert t.reload_from(c2, k2) is True and (t.cert_path, t.key_path) == (c2, k2)
    after, _ = handshake(t.context, client_for(pki, ["http/1.1"]))
    assert peer_serial(after.getpeercert(True)) == serial2


def test_reload_serves_the_new_certificate_to_new_handshakes_only(pki, tmp_path):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    t = ServerTLS(cert, key)
    before, _ = handshake(t.context, client_for(pki))
    assert peer_serial(before.getpeercert(True)) == pki.server_serial
    c2, k2, serial2 = pki.ca.issue("server-2")
    shutil.copy(c2, cert)
    shutil.copy(k2, key)
    # the listener's context is what the server was created with: it stays the same object
    listener = t.context
    assert t.reload() is True and t.reloads == 1
    assert t.context is listener and t.current is not listener
    after, _ = handshake(t.context, client_for(pki, ["http/1.1"]))
    assert peer_serial(after.getpeercert(True)) == serial2
    assert after.selected_alpn_protocol() == "http/1.1"  # ALPN survives the switch
    assert peer_serial(before.getpeercert(True)) == pki.server_serial  # the open one keeps its own


@pytest.mark.parametrize("damage", ["garbage", "missing", "mismatched key"])
def test_a_bad_reload_keeps_the_current_certificate_and_logs(pki, tmp_path, caplog, damage):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    t = ServerTLS(cert, key)
    current = t.current
    if damage == "garbage":
        (tmp_path / "live.crt").write_text("not a certificate\n")
    elif damage == "missing":
        (tmp_path / "live.key").unlink()
    else:
        _, other_key, _ = pki.ca.issue("other")
        shutil.copy(other_key, key)
    with caplog.at_level(logging.ERROR, logger="smg.server.tls"):
        assert t.reload() is False
    assert t.current is current and t.reloads == 0
    assert any("TLS reload failed" in r.getMessage() for r in caplog.records)
    c, _ = handshake(t.context, client_for(pki))
    assert peer_serial(c.getpeercert(True)) == pki.server_serial


def test_client_certificate_required_with_a_client_ca(pki):
    t = ServerTLS(pki.server_cert, pki.server_key, pki.ca.path)
    assert t.verifies_clients
    with pytest.raises(ssl.SSLError):
        handshake(t.context, client_for(pki))
    _, s = handshake(t.context, client_for(pki, cert=True))
    assert s.getpeercert()["subject"] == ((("commonName", "client"),),)


def test_a_client_certificate_from_another_ca_is_refused(pki, tmp_path):
    from tests.tlscerts import make_ca

    other = make_ca(str(tmp_path), "other CA")
    cc, ck, _ = other.issue("intruder", client=True)
    t = ServerTLS(pki.server_cert, pki.server_key, pki.ca.path)
    ctx = client_for(pki)
    ctx.load_cert_chain(cc, ck)
    with pytest.raises(ssl.SSLError):
        handshake(t.context, ctx)


def _cfg(**kw):
    return build_config(kw)


@pytest.mark.parametrize("given, flag", [
    ({"tls_cert_path": "c"}, "--tls-cert-path"),
    ({"tls_key_path": "k"}, "--tls-key-path"),
    ({"tls_client_ca_path": "ca"}, "--tls-client-ca-path"),
])
def test_incomplete_listener_tls_names_the_flag(given, flag):
    with pytest.raises(ConfigError) as e:
        ServerTLS.from_config(_cfg(**given))
    assert e.value.key == flag


def test_unloadable_listener_material_names_the_flag(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("nope\n")
    with pytest.raises(ConfigError) as e:
        ServerTLS.from_config(_cfg(tls_cert_path=str(bad), tls_key_path=pki.server_key))
    assert e.value.key == "--tls-cert-path"
    with pytest.raises(ConfigError) as e:
        ServerTLS.from_config(_cfg(tls_cert_path=pki.server_cert, tls_key_path=pki.server_key,
                                   tls_client_ca_path=str(bad)))
    assert e.value.key == "--tls-client-ca-path"
    assert ServerTLS.from_config(_cfg()) is None


# -- the worker client context ----------------------------------------------------------


def test_worker_context_trusts_the_extra_ca_and_checks_the_host(pki):
    server = server_context(pki.server_cert, pki.server_key, alpn=["http/1.1"])
    ctx = WorkerTLS([pki.ca.path]).context
    c, _ = handshake(server, ctx, "127.0.0.1")
    assert c.selected_alpn_protocol() == "http/1.1"
    handshake(server, ctx, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, ctx, "example.com")  # not a name the certificate carries


def test_worker_context_without_the_ca_refuses_the_test_server(pki):
    server = server_context(pki.server_cert, pki.server_key, alpn=["http/1.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_context(), "127.0.0.1")


def test_worker_context_accepts_a_ca_directory(pki, tmp_path):
    import subprocess

    d = tmp_path / "cadir"
    d.mkdir()
    shutil.copy(pki.ca.path, d / "ca.pem")
    if shutil.which("openssl") is None:
        pytest.skip("openssl (c_rehash) not available to hash the directory")
    subprocess.run(["openssl", "rehash", str(d)], check=True, capture_output=True, timeout=20)
    server = server_context(pki.server_cert, pki.server_key, alpn=["http/1.1"])
    handshake(server, WorkerTLS([str(d)]).context, "127.0.0.1")


def test_worker_client_certificate_is_presented(pki):
    server = server_context(pki.server_cert, pki.server_key, pki.ca.path, alpn=["http/1.1"])
    with pytest.raises(ssl.SSLError):
        handshake(server, WorkerTLS([pki.ca.path]).context)
    _, s = handshake(server, WorkerTLS([pki.ca.path], pki.client_cert, pki.client_key).context)
    assert s.getpeercert()["subject"] == ((("commonName", "client"),),)


def test_worker_context_is_built_once_and_lazily_without_material(monkeypatch):
    import smg.upstream.tls as upstream_tls

    built = []
    real = upstream_tls.client_context
    monkeypatch.setattr(upstream_tls, "client_context", lambda *a: built.append(a) or real(*a))
    t = WorkerTLS()
    assert built == []
    assert t.for_url("http://w:8000") is None and built == []
    ctx = t.for_url("https://w:8443")
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert t.for_url("HTTPS://w") is ctx and t.context is ctx and len(built) == 1


@pytest.mark.parametrize("given, flag", [
    ({"client_cert_path": "c.pem"}, "--client-cert-path"),
    ({"client_key_path": "k.pem"}, "--client-key-path"),
    ({"ca_cert_paths": ["/nonexistent/ca.pem"]}, "--ca-cert-paths"),
])
def test_worker_tls_errors_name_the_flag(given, flag):
    with pytest.raises(ConfigError) as e:
        WorkerTLS.from_config(_cfg(**given))
    assert e.value.key == flag


def test_unloadable_client_certificate_names_the_flag(pki):
    with pytest.raises(ConfigError) as e:
        WorkerTLS.from_config(_cfg(client_cert_path=pki.client_cert, client_key_path=pki.server_key))
    assert e.value.key == "--client-cert-path"


# -- https worker addresses ---------------------------------------------------------------


def test_https_worker_urls_are_accepted_with_port_443_by_default():
    cfg = build_config({"worker_urls": ["https://gpu1.example", "https://gpu2:8443/", "http://gpu3"]})
    assert cfg.worker_urls == ("https://gpu1.example", "https://gpu2:8443", "http://gpu3")
    w = Worker("https://gpu1.example")
    assert (w.host, w.port, w.host_header) == ("gpu1.example", 443, b"gpu1.example")
    w = Worker("https://gpu2:8443")
    assert (w.port, w.host_header) == (8443, b"gpu2:8443")
    assert Worker("http://gpu3").port == 80
    with pytest.raises(ConfigError):
        build_config({"worker_urls": ["ftp://gpu4"]})


def test_pool_of_an_https_worker_checks_the_worker_host(pki):
    cfg = build_config({})
    ctx = WorkerTLS([pki.ca.path]).context
    p = UpstreamPool.from_config(None, "gpu1.example", 443, cfg, ssl=ctx)
    assert p.ssl is ctx and p.server_hostname == "gpu1.example"
    p = UpstreamPool.from_config(None, "gpu1.example", 80, cfg)
    assert p.ssl is None and p.server_hostname is None
