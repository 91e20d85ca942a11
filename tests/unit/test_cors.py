"""The CORS policy core (smg/server/cors.py) and the sink that applies it, on the
in-memory request path (smg/testing/pathbench.py: no sockets)."""
from __future__ import annotations

import json

import pytest

from smg.config.load import build_config
from smg.errors import ConfigError
from smg.server.cors import ACAO, REFUSED, WORKER_CORS_HEADERS, CorsPolicy, normalize_origin
from smg.testing.pathbench import REQUEST, PathBench

APP = "https://app.example"


def hdict(pairs) -> dict:
    out: dict = {}
    for n, v in pairs:
        out.setdefault(n, []).append(v)
    return out


# -- origins --------------------------------------------------------------------------


@pytest.mark.parametrize("entry, origin", [
    ("https://App.Example", "https://app.example"),
    ("https://app.example/", "https://app.example"),
    ("https://app.example:443", "https://app.example"),
    ("http://app.example:80", "http://app.example"),
    ("http://localhost:5173", "http://localhost:5173"),
    ("https://app.example:8443", "https://app.example:8443"),
    ("http://[::1]:3000", "http://[::1]:3000"),
    ("tauri://localhost", "tauri://localhost"),
    ("*", "*"),
])
def test_origins_are_normalized_as_browsers_send_them(entry, origin):
    assert normalize_origin(entry) == origin


@pytest.mark.parametrize("entry", [
    "null", "NULL", "app.example", "https://app.example/path", "https://app.example?q=1", "https://u@app.example",
    "https://app.example#f", "https://app.example:99999", "https://bücher.example", "", "https://",
])
def test_what_is_not_an_origin_is_refused_at_start_up(entry):
    with pytest.raises(ValueError):
        normalize_origin(entry)
    with pytest.raises(ConfigError) as e:
        CorsPolicy.from_config(build_config({"cors_allowed_origins": [entry or "https://"]}))
    assert e.value.key == "--cors-allowed-origins"


def test_no_origins_means_no_policy():
    assert CorsPolicy.from_config(build_config({})) is None
    # the CLI/YAML form: one string, comma or space separated
    p = CorsPolicy.from_config(build_config({"cors_allowed_origins": "https://a.example, https://b.example"}))
    assert p.origins == ("https://a.example", "https://b.example")


# -- answer headers -------------------------------------------------------------------


def test_an_allowed_origin_gets_its_headers():
    p = CorsPolicy([APP, "http://localhost:5173"])
    h = hdict(p.headers([(b"host", b"x"), (b"origin", b"https://app.example")]))
    assert h[ACAO] == [b"https://app.example"]
    assert h[b"vary"] == [b"origin"]
    assert b"x-request-id" in h[b"access-control-expose-headers"][0]
    assert b"access-control-allow-credentials" not in h
    # an upper-case spelling of the same origin still matches; the answer names it as configured
    assert hdict(p.headers([(b"origin", b"HTTPS://APP.EXAMPLE")]))[ACAO] == [b"https://app.example"]


@pytest.mark.parametrize("headers", [
    [(b"origin", b"https://evil.example")], [(b"origin", b"https://app.example.evil.example")],
    [(b"origin", b"null")], [(b"origin", b"https://app.example:444")], [],
])
def test_other_origins_get_only_vary(headers):
    h = hdict(CorsPolicy([APP]).headers(headers))
    assert h == {b"vary": [b"origin"]}  # a cache must not serve an allowed origin's answer to them


def test_star_allows_every_origin_without_vary():
    p = CorsPolicy(["*"])
    h = hdict(p.headers([(b"origin", b"https://anyone.example")]))
    assert h[ACAO] == [b"*"] and b"vary" not in h and b"access-control-allow-credentials" not in h
    assert p.preflight([(b"origin", b"https://anyone.example"), (b"access-control-request-method", b"POST")])


# -- preflights -----------------------------------------------------------------------


def test_preflight_of_an_allowed_origin():
    p = CorsPolicy([APP])
    out = hdict(p.preflight([(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST"),
                             (b"access-control-request-headers", b"Content-Type, Authorization"),
                             (b"access-control-request-headers", b"x-stainless-os")]))
    assert out[b"access-control-allow-methods"] == [b"GET, POST, PUT, PATCH, DELETE, OPTIONS"]
    assert out[b"access-control-allow-headers"] == [b"content-type, authorization,x-stainless-os"]
    assert out[b"access-control-max-age"] == [b"3600"]
    assert b"access-control-request-method" in out[b"vary"][0]


def test_preflight_refused_or_not_a_preflight():
    p = CorsPolicy([APP])
    assert p.preflight([(b"origin", b"https://evil.example"), (b"access-control-request-method", b"POST")]) \
        is REFUSED
    assert p.preflight([(b"origin", b"https://app.example")]) is None          # a plain OPTIONS
    assert p.preflight([(b"access-control-request-method", b"POST")]) is None  # no origin


@pytest.mark.parametrize("asked", [b"content-type; x", b"a,,b", b"bad header", b"x\x01y", b","])
def test_requested_headers_that_are_no_token_list_are_not_echoed(asked):
    out = hdict(CorsPolicy([APP]).preflight([(b"origin", b"https://app.example"),
                                             (b"access-control-request-method", b"POST"),
                                             (b"access-control-request-headers", asked)]))
    assert b"access-control-allow-headers" not in out and b"access-control-allow-methods" in out


def test_worker_cors_headers_are_skipped_and_the_cache_is_bounded():
    p = CorsPolicy([APP])
    base = frozenset({b"connection"})
    s = p.skip(base)
    assert s == base | WORKER_CORS_HEADERS and p.skip(base) is s
    for i in range(100):
        p.skip(frozenset({b"x-%d" % i}))
    assert len(p._skips) <= 16


# -- the sink, in memory --------------------------------------------------------------


def answers(pb) -> list:
    """The responses written to the client: [(status, {name: [values]}, body)]."""
    data = b"".join(pb.client.out)
    pb.client.out.clear()
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        h = hdict(tuple(part.strip() for part in ln.split(b":", 1)) for ln in lines[1:])
        n = int(h[b"content-length"][0])
        out.append((int(lines[0].split()[1]), h, rest[:n]))
        data = rest[n:]
    return out


def bench(**settings) -> PathBench:
    return PathBench(metrics=False, access_log=False, **settings)


PREFLIGHT = (b"OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: gw\r\norigin: %s\r\n"
             b"access-control-request-method: POST\r\naccess-control-request-headers: authorization\r\n\r\n")


def test_sink_answers_a_preflight_before_the_method_check():
    pb = bench(cors_allowed_origins=[APP])
    try:
        pb.proto.data_received(PREFLIGHT % b"https://app.example")
        (st, h, body), = answers(pb)
        assert st == 200 and body == b"" and h[ACAO] == [b"https://app.example"]
        assert h[b"access-control-allow-headers"] == [b"authorization"] and b"x-request-id" in h
        # an unknown path too: CORS is outermost
        pb.proto.data_received((PREFLIGHT % b"https://app.example").replace(b"/v1/chat/completions", b"/nope"))
        (st, h, _), = answers(pb)
        assert st == 200 and h[ACAO] == [b"https://app.example"]
        # a refused origin: 403 in the API's format, no CORS grant
        pb.proto.data_received(PREFLIGHT % b"https://evil.example")
        (st, h, body), = answers(pb)
        assert st == 403 and ACAO not in h and h[b"vary"] == [b"origin"]
        assert json.loads(body)["error"]["code"] == "cors_origin_not_allowed"
        # an OPTIONS that is no preflight is an ordinary 405
        pb.proto.data_received(b"OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                               b"origin: https://app.example\r\n\r\n")
        (st, h, _), = answers(pb)
        assert st == 405 and h[ACAO] == [b"https://app.example"]
    finally:
        pb.close()


def test_without_the_setting_options_is_405_and_no_header_is_added():
    pb = bench()
    try:
        pb.proto.data_received(PREFLIGHT % b"https://app.example")
        (st, h, _), = answers(pb)
        assert st == 405 and not any(n.startswith(b"access-control-") for n in h) and b"vary" not in h
    finally:
        pb.close()


def test_relayed_answer_carries_the_gateways_cors_headers_not_the_workers():
    pb = bench(cors_allowed_origins=[APP])
    try:
        req = REQUEST.replace(b"host: gw\r\n", b"host: gw\r\norigin: https://app.example\r\n")
        pb.proto.data_received(req)
        body = b'{"ok":true}'
        pb.conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\n"
                              b"access-control-allow-credentials: true\r\ncontent-length: %d\r\n\r\n%s"
                              % (len(body), body))
        (st, h, got), = answers(pb)
        assert st == 200 and got == body
        assert h[ACAO] == [b"https://app.example"] and b"access-control-allow-credentials" not in h
        assert h[b"vary"] == [b"origin"]
    finally:
        pb.close()


def test_a_bad_origin_stops_the_gateway_from_being_built():
    from smg.server.app import Gateway

    with pytest.raises(ConfigError) as e:
        Gateway(build_config({"cors_allowed_origins": ["https://app.example", "null"]}))
    assert e.value.key == "--cors-allowed-origins"
