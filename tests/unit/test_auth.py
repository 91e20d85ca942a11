"""smg/auth without sockets: key parsing and lookup, the data-plane and control-plane
filters (with SMG's fall-backs), audit lines, the posture line, and the upstream
request head dropping a credential the gateway consumed."""
from __future__ import annotations

import hashlib
import logging

import orjson
import pytest

from smg.auth import CONTROL_AUTH, CONTROL_CLOSED, CONTROL_OPEN, CONTROL_SHARED_KEY, Auth
from smg.auth.audit import MAX_FIELD, Audit, sanitize
from smg.auth.filters import AuditOnly, ControlPlaneAuth, DataPlaneAuth
from smg.auth.keys import (KeyTable, bearer_token, control_plane_table, data_plane_table,
                           parse_control_plane_keys, parse_tenant_keys)
from smg.auth.posture import describe
from smg.auth.principal import Principal
from smg.config.load import build_config
from smg.errors import ConfigError
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.server.filters import Reply
from smg.upstream.forwarding import Forwarding
from smg.upstream.http1_leg import request_head
from smg.workers.worker import Worker

EP = {e.path: e for e in ENDPOINTS}


def ctx(path="/v1/chat/completions", method=b"POST", headers=(), ep=None):
    c = RequestContext(method, path.encode(), path.encode(), list(headers), ep or EP[path], 0.0)
    c.rid = b"req-1"
    return c


def bearer(token: bytes) -> tuple:
    return (b"authorization", b"Bearer " + token)


def auth(**settings) -> Auth:
    return Auth(build_config(settings), Reply)


# -- keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, token", [
    (b"Bearer k1", b"k1"), (b"bearer k1", b"k1"), (b"BEARER   k1", b"k1"), (b"Bearer k1 ", b"k1"),
    (b"Basic k1", None), (b"Bearerk1", None), (b"Bearer", None), (b"Bearer ", None), (b"k1", None), (None, None),
])
def test_bearer_token_matches_the_scheme_case_insensitively(value, token):
    assert bearer_token(value) == token


def test_tenant_keys_parse_on_the_first_colon():
    assert parse_tenant_keys(["team-red:s3cr:et", "blue:k2"]) == [("team-red", "s3cr:et"), ("blue", "k2")]


@pytest.mark.parametrize("entry", ["nokey", ":sekrit", "t:", "t:has sekrit", "t:sekrit\u00e9"])
def test_bad_tenant_keys_are_config_errors_that_never_show_the_key(entry):
    with pytest.raises(ConfigError) as e:
        parse_tenant_keys([entry])
    assert e.value.key == "--tenant-api-key"
    secret = entry.partition(":")[2]
    assert not secret or secret not in str(e.value)


def test_control_plane_keys_parse_id_name_role_key():
    assert parse_control_plane_keys(["a1:CI Pipeline:ADMIN:k:with:colons", "u1:Mon:user:k2"]) == [
        ("a1", "CI Pipeline", "admin", "k:with:colons"), ("u1", "Mon", "user", "k2")]


@pytest.mark.parametrize("entries", [["a:b:c"], ["a:n:root:k"], ["a:n:admin:"], ["a:n:admin:k", "a:m:user:j"],
                                     [":n:admin:k"]])
def test_bad_control_plane_keys_are_config_errors(entries):
    with pytest.raises(ConfigError) as e:
        parse_control_plane_keys(entries)
    assert e.value.key == "--control-plane-api-keys"


def test_key_table_holds_digests_only_and_finds_the_principal():
    t = data_plane_table("shared-secret", [("team-red", "red-secret")])
    assert len(t) == 2
    assert b"red-secret" not in repr(t._by_digest).encode()
    red = t.lookup(b"red-secret")
    assert (red.id, red.tenant_id, red.tenant_key, red.via) == ("team-red", "team-red", "auth:team-red",
                                                                "tenant_api_key")
    shared = t.lookup(b"shared-secret")
    assert shared.tenant_key == "auth:" + hashlib.sha256(b"shared-secret").hexdigest()  # SMG's identity
    for wrong in (b"red-secre", b"red-secrett", b"", b"RED-SECRET"):
        assert t.lookup(wrong) is None


def test_duplicate_keys_are_refused():
    with pytest.raises(ConfigError):
        data_plane_table("", [("a", "same"), ("b", "same")])
    with pytest.raises(ConfigError):
        control_plane_table([("a", "", "admin", "same"), ("b", "", "user", "same")])


def test_principals_are_immutable_and_show_no_secret():
    p = control_plane_table([("ops", "Ops", "admin", "topsecret")]).lookup(b"topsecret")
    with pytest.raises(AttributeError):
        p.role = "user"
    assert "topsecret" not in repr(p) and p.is_admin


# -- data plane ------------------------------------------------------------------------

def test_data_plane_admits_shared_and_tenant_keys_and_records_the_principal():
    f = DataPlaneAuth(data_plane_table("shared", [("red", "red-key")]), Reply)
    c = ctx(headers=[bearer(b"red-key")])
    assert f(None, c) is None and c.principal.tenant_key == "auth:red"
    assert c.principal.consumed_header == b"authorization"
    c = ctx(headers=[(b"x-api-key", b"shared")])  # the Anthropic SDK's header
    assert f(None, c) is None and c.principal.consumed_header == b"x-api-key"


@pytest.mark.parametrize("headers", [[], [bearer(b"nope")], [(b"authorization", b"Basic shared")],
                                     [(b"x-api-key", b"nope")]])
def test_data_plane_refuses_401_with_www_authenticate(headers):
    f = DataPlaneAuth(data_plane_table("shared", []), Reply)
    c = ctx(headers=headers)
    r = f(None, c)
    assert type(r) is Reply and r.status == 401 and r.code == "invalid_api_key"
    assert (b"www-authenticate", b"Bearer") in r.headers and c.principal is None


# -- control plane ---------------------------------------------------------------------

def control(keys=(("ops", "Ops", "admin", "admin-key"), ("mon", "Mon", "user", "user-key")), audit=None):
    return ControlPlaneAuth(control_plane_table(list(keys)), None, audit, Reply)


def test_control_plane_admin_key_is_admitted_with_its_role():
    c = ctx("/workers", headers=[bearer(b"admin-key")])
    assert control()(None, c) is None
    assert (c.principal.id, c.principal.name, c.principal.role) == ("ops", "Ops", "admin")


@pytest.mark.parametrize("headers, status, message", [
    ([], 401, "Missing or invalid Authorization header"),
    ([(b"x-api-key", b"admin-key")], 401, "Missing or invalid Authorization header"),  # bearer only there
    ([bearer(b"wrong")], 401, "Invalid authentication token"),
    ([bearer(b"user-key")], 403, "Admin role required for control plane access"),
])
def test_control_plane_matrix(headers, status, message):
    c = ctx("/workers/w1", b"DELETE", headers, EP["/workers/{worker_id}"])
    r = control()(None, c)
    assert (r.status, r.message) == (status, message) and c.principal is None
    if status == 401:
        assert r.headers == [(b"www-authenticate", b'Bearer realm="control-plane"')]


def test_settings_choose_the_modes_and_fall_backs():
    chat, workers, health = EP["/v1/chat/completions"], EP["/workers"], EP["/health"]
    a = auth()
    assert (a.control_mode, a.stage(chat), a.stage(workers), a.stage(health)) == (CONTROL_OPEN, None, None, None)
    a = auth(api_key="shared")
    assert a.control_mode == CONTROL_SHARED_KEY and isinstance(a.stage(chat), DataPlaneAuth)
    assert a.stage(health) is None and a.stage(EP["/v1/models"]) is None
    a = auth(tenant_api_key=["red:red-key"])
    assert a.control_mode == CONTROL_CLOSED
    a = auth(api_key="shared", control_plane_api_keys=["ops:Ops:admin:cp"])
    assert a.control_mode == CONTROL_AUTH and a.stage(workers) is a.control
    a = auth(control_plane_audit_enabled=True)
    assert a.control_mode == CONTROL_OPEN and isinstance(a.stage(workers), AuditOnly)


def test_fall_back_shared_key_opens_admin_routes_but_tenant_keys_do_not():
    a = auth(api_key="shared", tenant_api_key=["red:red-key"])
    f = a.stage(EP["/workers"])
    c = ctx("/workers", headers=[bearer(b"shared")])
    assert f(None, c) is None and c.principal.via == "api_key"
    assert f(None, ctx("/workers", headers=[bearer(b"red-key")])).status == 401


def test_tenant_keys_alone_close_the_control_plane():
    f = auth(tenant_api_key=["red:red-key"]).stage(EP["/workers"])
    assert f(None, ctx("/workers", headers=[bearer(b"red-key")])).status == 401
    assert f(None, ctx("/workers")).status == 401


def test_with_control_plane_auth_the_shared_key_no_longer_opens_admin_routes():
    a = auth(api_key="shared", control_plane_api_keys=["ops:Ops:admin:cp"])
    f = a.stage(EP["/workers"])
    assert f(None, ctx("/workers", headers=[bearer(b"shared")])).status == 401
    assert f(None, ctx("/workers", headers=[bearer(b"cp")])) is None
    # and a control-plane key does not open the data plane
    assert a.stage(EP["/v1/chat/completions"])(None, ctx(headers=[bearer(b"cp")])).status == 401


@pytest.mark.parametrize("settings, key", [
    ({"jwt_issuer": "https://idp.example.com"}, "--jwt-audience"),
    ({"jwt_audience": "api://smg"}, "--jwt-issuer"),
    ({"jwt_jwks_uri": "https://idp.example.com/jwks"}, "--jwt-issuer"),
    ({"jwt_issuer": "http://idp.example.com", "jwt_audience": "a"}, "--jwt-issuer"),
    ({"jwt_issuer": "https://idp.example.com", "jwt_audience": "a", "jwt_jwks_uri": "https://10.0.0.1/k"},
     "--jwt-jwks-uri"),
    ({"jwt_issuer": "https://idp.example.com", "jwt_audience": "a", "jwt_role_mapping": ["Admins"]},
     "--jwt-role-mapping"),
    ({"control_plane_api_keys": ["ops:admin:cp"]}, "--control-plane-api-keys"),
])
def test_half_or_wrongly_configured_auth_is_refused_at_start_up(settings, key):
    with pytest.raises(ConfigError) as e:
        auth(**settings)
    assert e.value.key == key


# -- audit -----------------------------------------------------------------------------

class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def audit_lines():
    h = Lines()
    logger = logging.getLogger("test.audit")
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield Audit(logger), h.lines
    logger.removeHandler(h)


def fields_of(line: str) -> dict:
    assert line.startswith("control_plane_audit ")
    out = {}
    rest = line[len("control_plane_audit "):]
    while rest:
        k, _, rest = rest.partition("=")
        if rest.startswith('"'):
            v, n = orjson.loads(rest[:rest.index('"', 1) + 1]), rest.index('"', 1) + 2
            rest = rest[n:]
        else:
            v, _, rest = rest.partition(" ")
        out[k] = v
    return out


def test_audit_lines_for_success_denied_and_refused(audit_lines):
    audit, lines = audit_lines
    f = control(audit=audit)
    f(None, ctx("/workers/w-7", b"DELETE", [bearer(b"admin-key")], EP["/workers/{worker_id}"]))
    f(None, ctx("/workers", b"POST", [bearer(b"user-key")], EP["/workers"]))
    f(None, ctx("/workers", b"POST", [bearer(b"nope")], EP["/workers"]))
    got = [fields_of(x) for x in lines]
    assert got[0] == {"principal": "ops", "auth_method": "control_plane_api_key", "role": "admin",
                      "method": "DELETE", "path": "/workers/w-7", "resource": "w-7", "outcome": "success",
                      "request_id": "req-1"}
    assert (got[1]["principal"], got[1]["outcome"], got[1]["details"]) == (
        "mon", "denied", "Admin role required for control plane access")
    assert (got[2]["principal"], got[2]["auth_method"], got[2]["outcome"]) == ("unauthenticated", "none", "denied")
    assert not any("admin-key" in x or "user-key" in x or "nope" in x for x in lines)


def test_audit_values_cannot_inject_lines():
    assert sanitize("a\nb\r\tc\\d\x00e\x1b") == "a\\nb\\r\\tc\\\\d\\x00e\\x1b"
    s = sanitize("x" * (MAX_FIELD + 50))
    assert s.endswith("...[TRUNCATED]") and len(s) == MAX_FIELD + len("...[TRUNCATED]")


def test_audit_only_stage_logs_an_open_control_plane(audit_lines):
    audit, lines = audit_lines
    assert AuditOnly(audit)(None, ctx("/workers", b"GET", [], EP["/workers"])) is None
    assert fields_of(lines[0])["outcome"] == "success" and fields_of(lines[0])["principal"] == "unauthenticated"


# -- posture ---------------------------------------------------------------------------

def test_posture_names_the_open_routes_when_no_key_is_configured():
    exposed, line = describe(auth(), ENDPOINTS)
    assert exposed and line.startswith("SECURITY POSTURE:")
    assert "data plane OPEN" in line and "POST /v1/chat/completions" in line
    assert "control plane OPEN" in line and "DELETE /workers/{worker_id}" in line.replace("GET/PUT/PATCH/", "")
    assert "public: /get_model_info" in line


def test_posture_when_protected_lists_counts_never_keys():
    a = auth(api_key="shared-secret", tenant_api_key=["red:r1", "blue:b1"],
             control_plane_api_keys=["ops:Ops:admin:cp-secret"], control_plane_audit_enabled=True)
    exposed, line = describe(a, ENDPOINTS, "127.0.0.1:31000")
    assert not exposed and line.startswith("security posture:")
    assert "the shared --api-key + 2 tenant keys" in line and "1 control-plane key" in line
    assert "on 127.0.0.1:31000" in line and "audit on" in line
    assert "secret" not in line and "r1" not in line
    exposed, line = describe(auth(tenant_api_key=["red:r1"]), ENDPOINTS)
    assert not exposed and "CLOSED" in line


# -- the worker never sees the gateway's own key ----------------------------------------

def worker(key=None) -> Worker:
    w = Worker("http://127.0.0.1:9")
    w.api_key = key
    return w


def head_lines(head: bytes) -> list:
    return head.split(b"\r\n")


def test_a_consumed_credential_is_not_forwarded_and_others_are():
    hdrs = [(b"authorization", b"Bearer gw-key"), (b"x-api-key", b"client-thing")]
    wide = Forwarding(forward_all=True)  # x-api-key is not on the default allow-list
    h = head_lines(request_head(b"POST", b"/v1/x", worker(), hdrs, 0, drop=b"authorization", fwd=wide))
    assert b"authorization: Bearer gw-key" not in h and b"x-api-key: client-thing" in h
    h = head_lines(request_head(b"POST", b"/v1/x", worker(), hdrs, 0, drop=b"x-api-key", fwd=wide))
    assert b"authorization: Bearer gw-key" in h and b"x-api-key: client-thing" not in h
    h = head_lines(request_head(b"POST", b"/v1/x", worker(), hdrs, 0))
    assert b"authorization: Bearer gw-key" in h  # not the gateway's: forwarded, as SMG does
    assert b"x-api-key: client-thing" not in h   # the default allow-list keeps it at the gateway
    h = head_lines(request_head(b"POST", b"/v1/x", worker(), hdrs, 0, drop=b"authorization"))
    assert b"authorization: Bearer gw-key" not in h
    h = head_lines(request_head(b"POST", b"/v1/x", worker(b"wk"), hdrs, 0, drop=b"x-api-key", fwd=wide))
    assert b"authorization: Bearer wk" in h and b"authorization: Bearer gw-key" not in h
    assert b"x-api-key: client-thing" not in h


def test_principal_with_header_is_a_new_record():
    p = Principal("a", None, "admin", "api_key", "t")
    q = p.with_header(b"x-api-key")
    assert q is not p and q.consumed_header == b"x-api-key" and p.consumed_header is None
    assert q.tenant_key == "auth:t"


def test_empty_key_table_refuses_everything():
    assert KeyTable().lookup(b"") is None and KeyTable().lookup(b"x") is None


def test_a_verified_key_is_found_again_without_hashing(monkeypatch):
    import smg.auth.keys as K

    hashed = []
    real = K.digest
    monkeypatch.setattr(K, "digest", lambda tok: hashed.append(tok) or real(tok))
    t = data_plane_table("shared-secret", [("team-red", "red-secret")])
    hashed.clear()
    first = t.lookup(b"red-secret")
    assert hashed == [b"red-secret"]
    token = bytes(bytearray(b"red-secret"))        # another object with the same bytes, as a new request has
    assert t.lookup(token) is first and hashed == [b"red-secret"]   # one dict probe, no SHA-256
    via_x = t.lookup(b"red-secret", b"x-api-key")    # per header: its own principal, verified on its own
    assert via_x.consumed_header == b"x-api-key" and first.consumed_header == b"authorization"
    assert len(hashed) == 2 and t.lookup(b"red-secret", b"x-api-key") is via_x and len(hashed) == 2
    for wrong in (b"red-secre", b"red-secret ", b"RED-SECRET", b"shared-secre"):
        for _ in range(3):
            assert t.lookup(wrong) is None         # a miss always hashes and compares, never remembered
    assert len(hashed) == 2 + 12
    assert sum(len(v) for v in t._verified.values()) == 2   # only tokens equal to a configured key
    assert t.lookup(bytearray(b"shared-secret")).tenant_id is not None   # bytes-like still looked up
    assert "secret" not in repr(t)


def test_the_data_plane_remembers_a_verified_header_value_and_bounds_its_spellings(monkeypatch):
    import smg.auth.keys as K

    hashed = []
    real = K.digest
    monkeypatch.setattr(K, "digest", lambda tok: hashed.append(tok) or real(tok))
    f = auth(api_key="shared-secret").data
    hashed.clear()                                   # (the tables hash their keys once, at start-up)
    c = ctx(headers=[bearer(b"shared-secret")])
    assert f(None, c) is None and c.principal.consumed_header == b"authorization"
    assert hashed == [b"shared-secret"]
    for _ in range(3):
        c2 = ctx(headers=[(b"authorization", bytes(bytearray(b"Bearer shared-secret")))])
        assert f(None, c2) is None and c2.principal is c.principal   # one probe: no parsing, no hash
    assert hashed == [b"shared-secret"]
    # other spellings of the same key: each verified once (the token itself is known by
    # then), at most SPELLINGS_PER_KEY remembered; beyond that they still work
    spellings = [b"bearer shared-secret", b"BEARER shared-secret", b"Bearer  shared-secret",
                 b"Bearer shared-secret ", b"Bearer shared-secret\t"]
    for v in spellings * 2:
        c3 = ctx(headers=[(b"authorization", v)])
        assert f(None, c3) is None and c3.principal is c.principal
    assert len(f.keys.seen[b"authorization"]) == K.SPELLINGS_PER_KEY == 4
    # a wrong credential is never remembered and always refused
    for _ in range(3):
        assert f(None, ctx(headers=[bearer(b"shared-secreT")])).status == 401
    assert len(f.keys.seen[b"authorization"]) == 4 and hashed.count(b"shared-secreT") == 3
    # x-api-key: its own principal (the header it consumed), remembered apart
    c4 = ctx(headers=[(b"authorization", b"Bearer byok"), (b"x-api-key", b" shared-secret ")])
    assert f(None, c4) is None and c4.principal.consumed_header == b"x-api-key"
    assert f.keys.seen[b"x-api-key"] == {b" shared-secret ": c4.principal}
