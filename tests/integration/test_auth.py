"""Authentication through the running gateway: the 401/403 matrix of the data plane and
the control plane with API keys, tenant keys and JWTs (signed by keys made here and
served by a fake IdP on 127.0.0.1), SMG's fall-backs, audit lines, the separate
control-plane listener, the start-up posture line, and credentials that never reach
a worker or an answer."""
from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest

from smg.observability.logs import AccessLog
from smg.testing.fake_idp import FakeIdP, SigningKey, claims_for, hs256_with_public_key, unsigned
from smg.testing.harness import GatewayHarness, LoopThread
from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
MSG = b'{"model":"mock-model","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'
AUD = "api://smg-control-plane"
REALM = 'Bearer realm="control-plane"'


def call(port, method, path, body=b"", headers=()):
    extra = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
    raw = b"%s %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        method.encode(), path.encode(), len(body), extra, body)
    st, hdrs, data = rawhttp.request(port, raw, methods=[method])[0]
    if not data:
        return st, hdrs, None
    return st, hdrs, (json.loads(data) if hdrs.get("content-type", "").startswith("application/json") else data)


def bearer(token):
    return [("authorization", "Bearer " + token)]


def chat(h, headers=()):
    return call(h.port, "POST", "/v1/chat/completions", CHAT, headers)


def assert_401(resp, realm=None):
    st, hdrs, body = resp
    assert st == 401, resp
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] in (
        "invalid_api_key", "invalid_token")
    assert hdrs["www-authenticate"] == (realm or "Bearer")


# -- the data plane ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed():
    with GatewayHarness(api_key="shared-secret",
                        tenant_api_key=["team-red:ruby-tenant-key", "team-blue:azure-tenant-key"],
                        control_plane_api_keys=["ops:Platform Ops:admin:admin-secret",
                                                "mon:Monitoring:user:user-secret"]) as h:
        yield h


def test_data_plane_needs_a_gateway_key(keyed):
    assert_401(chat(keyed))
    assert_401(chat(keyed, bearer("wrong")))
    assert_401(chat(keyed, [("authorization", "Basic shared-secret")]))
    assert_401(chat(keyed, bearer("admin-secret")))  # a control-plane key is not a data-plane key
    for key in ("shared-secret", "ruby-tenant-key", "azure-tenant-key"):
        assert chat(keyed, bearer(key))[0] == 200
    assert chat(keyed, [("authorization", "bearer ruby-tenant-key")])[0] == 200  # scheme case-insensitive


def test_anthropic_route_answers_in_its_format_and_takes_x_api_key(keyed):
    st, hdrs, body = call(keyed.port, "POST", "/v1/messages", MSG)
    assert st == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert hdrs["www-authenticate"] == "Bearer"
    assert call(keyed.port, "POST", "/v1/messages", MSG, [("x-api-key", "ruby-tenant-key")])[0] == 200


def test_public_routes_need_no_key(keyed):
    for path in ("/health", "/liveness", "/readiness", "/v1/models", "/get_server_info"):
        assert call(keyed.port, "GET", path)[0] == 200, path


def test_the_gateways_key_never_reaches_the_worker(keyed):
    # --api-key is also the CLI workers' key (SMG): the worker sees that, not the tenant key sent
    assert chat(keyed, bearer("ruby-tenant-key"))[0] == 200
    seen = [w.stats.last_headers for w in keyed.workers if w.stats.last_headers]
    assert seen and all(hd.get("authorization") == "Bearer shared-secret" for hd in seen)
    assert not any("ruby-tenant-key" in v for hd in seen for v in hd.values())


def test_with_tenant_keys_only_the_worker_sees_no_authorization(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1")], tenant_api_key=["red:ruby-tenant-key"])
    st, _, _ = call(h.port, "POST", "/v1/messages", MSG,
                    [("x-api-key", "ruby-tenant-key"), ("authorization", "Bearer byok")])
    assert st == 200
    hd = h.workers[0].stats.last_headers
    assert "x-api-key" not in hd and hd.get("authorization") == "Bearer byok"  # not ours: forwarded
    assert chat(h, bearer("ruby-tenant-key"))[0] == 200
    assert "authorization" not in h.workers[0].stats.last_headers


def test_without_keys_the_clients_authorization_is_forwarded(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1")])
    assert chat(h, bearer("client-token"))[0] == 200
    assert h.workers[0].stats.last_headers["authorization"] == "Bearer client-token"


# -- the control plane with control-plane keys ---------------------------------------------

def test_control_plane_matrix_with_keys(keyed):
    port = keyed.port
    st, hdrs, body = call(port, "GET", "/workers")
    assert st == 401 and hdrs["www-authenticate"] == REALM and "Missing" in body["error"]["message"]
    assert_401(call(port, "GET", "/workers", headers=bearer("nope")), REALM)
    assert_401(call(port, "GET", "/workers", headers=bearer("shared-secret")), REALM)  # cp auth configured
    assert_401(call(port, "GET", "/workers", headers=bearer("ruby-tenant-key")), REALM)
    st, _, body = call(port, "GET", "/workers", headers=bearer("user-secret"))
    assert st == 403 and body["error"]["type"] == "permission_error" and "Admin role" in body["error"]["message"]
    st, _, body = call(port, "GET", "/workers", headers=bearer("admin-secret"))
    assert st == 200 and body["total"] >= 2


def test_registering_and_removing_workers_needs_admin(keyed):
    port = keyed.port
    spec = json.dumps({"url": "http://127.0.0.1:9", "api_key": "worker-secret-key"}).encode()
    assert call(port, "POST", "/workers", spec)[0] == 401
    assert call(port, "POST", "/workers", spec, bearer("user-secret"))[0] == 403
    assert call(port, "POST", "/add_worker?url=http://127.0.0.1:9", b"", bearer("user-secret"))[0] == 403
    assert keyed.on_loop(lambda: len(keyed.gw.registry)) == 2  # nothing registered
    wid = keyed.on_loop(lambda: next(iter(keyed.gw.registry.all())).id)
    for headers, status in (((), 401), (bearer("user-secret"), 403), (bearer("ruby-tenant-key"), 401)):
        assert call(port, "DELETE", f"/workers/{wid}", b"", list(headers))[0] == status
    assert keyed.on_loop(lambda: keyed.gw.registry.get(wid)) is not None
    st, _, body = call(port, "POST", "/workers", spec, bearer("admin-secret"))
    assert st == 202 and "worker-secret-key" not in json.dumps(body)
    new_id = body["worker_id"]
    listing = call(port, "GET", "/workers", headers=bearer("admin-secret"))[2]
    one = call(port, "GET", f"/workers/{new_id}", headers=bearer("admin-secret"))[2]
    assert "worker-secret-key" not in json.dumps(listing) + json.dumps(one)
    assert call(port, "DELETE", f"/workers/{new_id}", b"", bearer("admin-secret"))[0] == 202


# -- SMG's fall-backs --------------------------------------------------------------------

def test_shared_key_guards_admin_routes_when_no_control_plane_auth(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1")], api_key="shared-secret",
                     tenant_api_key=["red:ruby-tenant-key"])
    assert_401(call(h.port, "GET", "/workers"), REALM)
    assert_401(call(h.port, "GET", "/workers", headers=bearer("ruby-tenant-key")), REALM)
    assert call(h.port, "GET", "/workers", headers=bearer("shared-secret"))[0] == 200


def test_tenant_keys_alone_close_admin_routes(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1")], tenant_api_key=["red:ruby-tenant-key"])
    assert_401(call(h.port, "GET", "/workers", headers=bearer("ruby-tenant-key")), REALM)
    assert_401(call(h.port, "POST", "/workers", b'{"url":"http://127.0.0.1:9"}'), REALM)
    assert chat(h, bearer("ruby-tenant-key"))[0] == 200


# -- JWT / OIDC --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def idp():
    lt = LoopThread()
    server = lt.run(FakeIdP().start())
    server.keys.append(SigningKey.rsa("key-1"))
    try:
        yield server
    finally:
        lt.run(server.stop())
        lt.stop()


@pytest.fixture(scope="module")
def jwt_gateway(idp):
    with GatewayHarness(workers=[MockConfig(worker_id="w1")], jwt_issuer=idp.url, jwt_audience=AUD,
                        jwt_jwks_uri=idp.jwks_uri, jwt_role_mapping=["Gateway.Admin=admin", "Gateway.User=user"],
                        control_plane_api_keys=["svc:CI:admin:svc-secret"]) as h:
        yield h


def token(idp, key=None, **kw):
    return (key or idp.keys[0]).sign(claims_for(idp.url, AUD, **kw))


def workers_with(h, tok):
    return call(h.port, "GET", "/workers", headers=bearer(tok))


def test_jwt_roles(jwt_gateway, idp):
    assert workers_with(jwt_gateway, token(idp, roles=["Gateway.Admin"]))[0] == 200
    st, _, body = workers_with(jwt_gateway, token(idp, roles=["Gateway.User"]))
    assert st == 403 and "Admin role" in body["error"]["message"]
    assert workers_with(jwt_gateway, token(idp, roles=["admin"]))[0] == 403  # mapped values only
    assert workers_with(jwt_gateway, "svc-secret")[0] == 200  # API keys still work beside JWT


@pytest.mark.parametrize("case", ["expired", "not_yet_valid", "audience", "issuer", "signature", "alg_none",
                                  "hs256_public_key", "garbage"])
def test_bad_jwts_are_refused(jwt_gateway, idp, case):
    now = int(time.time())
    admin = {"roles": ["Gateway.Admin"]}
    key = idp.keys[0]
    tok = {
        "expired": lambda: token(idp, exp=now - 3600, **admin),
        "not_yet_valid": lambda: token(idp, nbf=now + 3600, **admin),
        "audience": lambda: key.sign(claims_for(idp.url, "api://someone-else", **admin)),
        "issuer": lambda: key.sign(claims_for("http://127.0.0.1:1", AUD, **admin)),
        "signature": lambda: SigningKey.rsa(key.kid).sign(claims_for(idp.url, AUD, **admin)),
        "alg_none": lambda: unsigned(claims_for(idp.url, AUD, **admin), key.kid),
        "hs256_public_key": lambda: hs256_with_public_key(key, claims_for(idp.url, AUD, **admin)),
        "garbage": lambda: "eyJ.not.jwt",
    }[case]()
    st, hdrs, body = workers_with(jwt_gateway, tok)
    assert st == 401 and hdrs["www-authenticate"] == REALM, body
    assert body["error"]["code"] == "invalid_token" and body["error"]["message"].startswith("Invalid JWT")
    # a JWT-shaped token that fails is never tried as an API key
    assert tok not in body["error"]["message"]


def test_key_rotation_is_picked_up_and_unknown_kids_do_not_hammer_the_idp(jwt_gateway, idp):
    assert workers_with(jwt_gateway, token(idp, roles=["Gateway.Admin"]))[0] == 200
    fetches = idp.hits.get("/jwks", 0)
    assert fetches >= 1
    rotated = SigningKey.ec("key-2")
    idp.keys.append(rotated)  # the IdP publishes a new key; the gateway's cache predates it
    assert workers_with(jwt_gateway, token(idp, key=rotated, roles=["Gateway.Admin"]))[0] == 200
    assert idp.hits["/jwks"] == fetches + 1
    ghost = SigningKey.rsa("ghost")
    for _ in range(3):
        st, _, body = workers_with(jwt_gateway, token(idp, key=ghost, roles=["Gateway.Admin"]))
        assert st == 401 and "ghost" in body["error"]["message"]
    assert idp.hits["/jwks"] == fetches + 1  # rate-limited: no fetch per unknown kid


def test_jwks_discovered_from_the_issuer(idp):
    before = idp.hits.get("/.well-known/openid-configuration", 0)
    jwks_before = idp.hits.get("/jwks", 0)
    with GatewayHarness(workers=[], jwt_issuer=idp.url, jwt_audience=AUD) as h:
        # fetched at start-up, before any token arrives
        assert wait_for(lambda: idp.hits.get("/jwks", 0) == jwks_before + 1, 10)
        assert workers_with(h, token(idp, roles=["admin"]))[0] == 200
        assert workers_with(h, token(idp, roles=["user"]))[0] == 403
    assert idp.hits["/.well-known/openid-configuration"] == before + 1
    assert idp.hits["/jwks"] == jwks_before + 1  # the tokens were checked against the cache


def test_idp_down_refuses_jwts_but_keys_still_work(make_gateway):
    h = make_gateway(workers=[], jwt_issuer="http://127.0.0.1:1", jwt_audience=AUD,
                     control_plane_api_keys=["svc:CI:admin:svc-secret"])
    st, _, body = workers_with(h, SigningKey.rsa("k").sign(claims_for("http://127.0.0.1:1", AUD, roles=["admin"])))
    assert st == 401 and "signing key" in body["error"]["message"]
    assert workers_with(h, "svc-secret")[0] == 200


def test_a_jwt_does_not_open_the_data_plane(make_gateway, idp):
    # SMG: JWTs are control-plane credentials; the data plane takes the gateway's API keys
    h = make_gateway(workers=[MockConfig(worker_id="w1")], api_key="shared-secret", jwt_issuer=idp.url,
                     jwt_audience=AUD, jwt_jwks_uri=idp.jwks_uri)
    admin = token(idp, roles=["admin"])
    assert workers_with(h, admin)[0] == 200                      # a valid admin token ...
    assert_401(chat(h, bearer(admin)))                           # ... is no data-plane key
    st, _, body = call(h.port, "POST", "/v1/messages", MSG, bearer(admin))
    assert st == 401 and body["error"]["type"] == "authentication_error"
    assert h.workers[0].stats.paths.get("/v1/chat/completions", 0) == 0   # nothing reached the worker
    assert chat(h, bearer("shared-secret"))[0] == 200


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
                                 "http://metadata.google.internal/"])
def test_admin_credentials_do_not_register_a_metadata_address(keyed, jwt_gateway, idp, url):
    # the address guard runs after auth: an admin is still refused a metadata service
    spec = json.dumps({"url": url}).encode()
    for h, cred in ((keyed, "admin-secret"), (jwt_gateway, token(idp, roles=["Gateway.Admin"]))):
        before = h.on_loop(lambda: len(h.gw.registry))
        st, _, body = call(h.port, "POST", "/workers", spec, bearer(cred))
        assert st == 400 and body["error"]["code"] == "invalid_worker_spec", body
        st, _, body = call(h.port, "POST", "/add_worker?url=" + url, b"", bearer(cred))
        assert st == 400 and body["error"]["code"] == "invalid_worker_spec", body
        assert h.on_loop(lambda: len(h.gw.registry)) == before   # nothing registered


# -- audit -------------------------------------------------------------------------------

class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


def test_audit_lines_when_enabled(make_gateway):
    lines = Lines()
    logger = logging.getLogger("smg.audit")
    logger.addHandler(lines)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        h = make_gateway(workers=[MockConfig(worker_id="w1")], control_plane_audit_enabled=True,
                         control_plane_api_keys=["ops:Ops:admin:admin-secret", "mon:Mon:user:user-secret"])
        call(h.port, "GET", "/workers", headers=bearer("admin-secret"))
        call(h.port, "POST", "/workers", b'{"url":"http://127.0.0.1:9"}', bearer("user-secret"))
        call(h.port, "DELETE", "/workers/nope", b"", bearer("bad-token-value"))
        chat(h)  # the data plane is not audited
        assert wait_for(lambda: len(lines.lines) >= 3, 5)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old)
    got = lines.lines
    assert len(got) == 3 and all(x.startswith("control_plane_audit ") for x in got)
    assert "principal=ops" in got[0] and "outcome=success" in got[0] and "path=/workers" in got[0]
    assert "principal=mon" in got[1] and "outcome=denied" in got[1] and "method=POST" in got[1]
    assert "principal=unauthenticated" in got[2] and "resource=nope" in got[2]
    assert not any("secret" in x or "bad-token-value" in x for x in got)


# -- the worker's key stays secret in the access log ------------------------------------------

def test_worker_api_key_never_in_the_access_log(make_gateway):
    buf = io.BytesIO()
    h = make_gateway(workers=[MockConfig(worker_id="w1")], access_log=AccessLog(buf, json_lines=False),
                     control_plane_api_keys=["ops:Ops:admin:admin-secret"])
    spec = json.dumps({"url": "http://127.0.0.1:9", "api_key": "worker-secret-key"}).encode()
    assert call(h.port, "POST", "/workers", spec, bearer("admin-secret"))[0] == 202
    call(h.port, "PATCH", "/workers/x?api_key=worker-secret-key", b'{"api_key":"worker-secret-key"}',
         bearer("admin-secret"))
    call(h.port, "GET", "/workers", headers=bearer("admin-secret"))
    h.on_loop(h.gw.access_log.flush)
    log = buf.getvalue()
    assert b"path=/workers" in log and b"worker-secret-key" not in log and b"admin-secret" not in log


# -- the control plane on its own listener ---------------------------------------------------

def test_control_plane_listener(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="w1")], control_plane_port=0, api_key="shared-secret")
    cport = h.gw.control_port
    assert cport != h.port
    st, _, body = call(h.port, "GET", "/workers", headers=bearer("shared-secret"))
    assert st == 404 and body["error"]["code"] == "unknown_url"
    assert call(h.port, "DELETE", "/workers/x", b"", bearer("shared-secret"))[0] == 404
    assert_401(call(cport, "GET", "/workers"), REALM)
    st, _, body = call(cport, "GET", "/workers", headers=bearer("shared-secret"))
    assert st == 200 and body["total"] == 1
    assert call(cport, "POST", "/v1/chat/completions", CHAT, bearer("shared-secret"))[0] == 404
    assert chat(h, bearer("shared-secret"))[0] == 200
    exposed, line = h.gw.security_posture()
    assert not exposed and f"127.0.0.1:{cport}" in line


# -- the posture line at start-up --------------------------------------------------------------

def _stderr_until(p, needle: str, timeout: float = 20.0) -> str:
    seen: list = []
    done = threading.Event()

    def read():
        for line in p.stderr:
            seen.append(line.decode(errors="replace"))
            if needle in seen[-1]:
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return "".join(seen)


@pytest.mark.parametrize("args, expect, absent", [
    ((), "WARNING: SECURITY POSTURE: data plane OPEN", "security posture: data plane: the shared"),
    (("--api-key", "sekrit-shared", "--control-plane-api-keys", "ops:Ops:admin:sekrit-cp"),
     "security posture: data plane: the shared --api-key", "sekrit"),
])
def test_cli_prints_the_security_posture(args, expect, absent):
    p = subprocess.Popen([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", "0",
                          "--prometheus-port", "0", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out = _stderr_until(p, "osture")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    assert expect in out, out
    assert absent not in out
