"""smg/auth/jwt.py without sockets: tokens signed by keys made here, a JWKS served by a
fake fetch, and a fake monotonic clock for the cache and its refresh limits."""
from __future__ import annotations

import asyncio
import time

import pytest

from smg.auth.jwt import (FETCH, FETCH_FOR_KID, MISS_REFRESH_SECS, RETRY_SECS, JwksCache, JwtError,
                          JwtSettings, JwtValidator, check_url, parse_jwks, parse_role_mapping)
from smg.auth.principal import Principal
from smg.errors import ConfigError, UpstreamTimeout
from smg.testing.fake_idp import SigningKey, claims_for, hs256_with_public_key, unsigned

ISS = "https://idp.example.com"
AUD = "api://smg"
JWKS = "https://idp.example.com/jwks"

RSA = SigningKey.rsa("k1")
RSA2 = SigningKey.rsa("k2")
EC = SigningKey.ec("e1")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Fetch:
    """An IdP behind a fake fetch: ``docs[url]`` is served; ``calls`` counts them."""

    def __init__(self, *keys, fail=None) -> None:
        self.keys = list(keys)
        self.calls: list = []
        self.fail = fail
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str):
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISS, "jwks_uri": JWKS}
        return {"keys": [k.public_jwk() for k in self.keys]}


def validator(fetch, clock=None, **kw) -> JwtValidator:
    settings = JwtSettings(ISS, AUD, kw.pop("jwks_uri", JWKS), kw.pop("role_claim", "roles"),
                           kw.pop("role_mapping", None))
    return JwtValidator(settings, clock or Clock(), fetch)


def check(v: JwtValidator, token: str) -> Principal:
    """Validates, running the fetch if one is needed."""
    r = v.validate(token)
    if type(r) is Principal:
        return r
    return asyncio.run(r)


def refused(v: JwtValidator, token: str) -> str:
    with pytest.raises(JwtError) as e:
        check(v, token)
    return str(e.value)


# -- accepted tokens ---------------------------------------------------------------------

def test_valid_rs256_token_gives_its_role_and_subject():
    v = validator(Fetch(RSA))
    p = check(v, RSA.sign(claims_for(ISS, AUD, roles=["admin"], name="Alice")))
    assert (p.id, p.name, p.role, p.via, p.tenant_id) == ("alice@example.com", "Alice", "admin", "jwt", None)
    assert p.consumed_header == b"authorization"


def test_es256_tokens_and_audience_lists_are_accepted():
    v = validator(Fetch(EC))
    assert check(v, EC.sign(claims_for(ISS, [AUD, "other"], roles="admin"))).role == "admin"


def test_second_token_uses_the_cache_without_waiting():
    f = Fetch(RSA)
    v = validator(f)
    check(v, RSA.sign(claims_for(ISS, AUD)))
    r = v.validate(RSA.sign(claims_for(ISS, AUD, roles=["user"])))
    assert type(r) is Principal and r.role == "user" and len(f.calls) == 1  # answered at once


def test_discovery_finds_the_jwks_when_no_uri_is_given():
    f = Fetch(RSA)
    v = validator(f, jwks_uri=None)
    assert check(v, RSA.sign(claims_for(ISS, AUD, roles=["admin"]))).role == "admin"
    assert f.calls == [ISS + "/.well-known/openid-configuration", JWKS]


# -- refused tokens ----------------------------------------------------------------------

def test_expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway():
    v = validator(Fetch(RSA))
    now = int(time.time())
    assert "expired" in refused(v, RSA.sign(claims_for(ISS, AUD, exp=now - 120)))
    assert "not yet valid" in refused(v, RSA.sign(claims_for(ISS, AUD, nbf=now + 120)))
    # within SMG's 30 s leeway: still good
    assert check(v, RSA.sign(claims_for(ISS, AUD, exp=now - 5, nbf=now + 5))).id == "alice@example.com"


def test_wrong_audience_issuer_and_missing_claims_are_refused():
    v = validator(Fetch(RSA))
    assert "Audience" in refused(v, RSA.sign(claims_for(ISS, "api://else")))
    assert "issuer" in refused(v, RSA.sign(claims_for("https://evil.example.com", AUD))).lower()
    c = claims_for(ISS, AUD)
    del c["exp"]
    assert "exp" in refused(v, RSA.sign(c))
    c = claims_for(ISS, AUD)
    del c["aud"]
    assert "aud" in refused(v, RSA.sign(c))


def test_bad_signature_is_refused():
    v = validator(Fetch(RSA))
    forged = SigningKey.rsa("k1")  # same kid, another key
    assert "Signature verification failed" in refused(v, forged.sign(claims_for(ISS, AUD, roles=["admin"])))
    good = RSA.sign(claims_for(ISS, AUD))
    head, body, sig = good.split(".")
    assert refused(v, f"{head}.{body}.{sig[:-4]}AAAA")


def test_alg_none_and_hs256_with_the_public_key_are_refused_before_any_fetch():
    f = Fetch(RSA)
    v = validator(f)
    assert "Unsupported algorithm" in refused(v, unsigned(claims_for(ISS, AUD, roles=["admin"]), "k1"))
    assert "Unsupported algorithm" in refused(v, hs256_with_public_key(RSA, claims_for(ISS, AUD, roles=["admin"])))
    assert f.calls == []


def test_token_alg_must_match_the_key_algorithm():
    v = validator(Fetch(RSA))
    check(v, RSA.sign(claims_for(ISS, AUD)))
    # RS384 header on an RS256 key: refused (algorithm pinned by the key)
    assert "Algorithm mismatch" in refused(v, RSA.sign(claims_for(ISS, AUD), alg="RS384"))


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "", "eyJhbGciOiJSUzI1NiJ9.e30.x"])
def test_malformed_tokens_and_missing_kid(token):
    assert refused(validator(Fetch(RSA)), token)


def test_missing_kid_is_refused():
    import jwt

    t = jwt.encode(claims_for(ISS, AUD), RSA.private, algorithm="RS256")
    assert "kid" in refused(validator(Fetch(RSA)), t)


# -- roles -------------------------------------------------------------------------------

@pytest.mark.parametrize("claims, mapping, role", [
    ({"roles": ["ADMIN"]}, None, "admin"),
    ({"roles": "user"}, None, "user"),
    ({"roles": ["reader"]}, None, "user"),                       # nothing recognised: user
    ({}, None, "user"),
    ({"groups": ["x", "admin"]}, None, "admin"),                 # alternates when roles is absent
    ({"roles": ["reader"], "groups": ["admin"]}, None, "user"),  # ... and only then
    ({"roles": ["Gateway.Admin"]}, {"Gateway.Admin": "admin"}, "admin"),
    ({"roles": ["admin"]}, {"Gateway.Admin": "admin"}, "user"),  # with a mapping only mapped values count
    # both roles named: the most privileged wins, whatever the order (SMG takes the first)
    ({"roles": ["Gateway.User", "Gateway.Admin"]}, {"Gateway.User": "user", "Gateway.Admin": "admin"}, "admin"),
    ({"roles": ["Gateway.Admin", "Gateway.User"]}, {"Gateway.User": "user", "Gateway.Admin": "admin"}, "admin"),
    ({"roles": ["user", "Admin"]}, None, "admin"),
    ({"roles": ["user", "reader"]}, None, "user"),
    ({"roles": ["Gateway.User", "admin"]}, {"Gateway.User": "user"}, "user"),  # unmapped admin does not count
])
def test_role_extraction(claims, mapping, role):
    assert validator(Fetch(RSA), role_mapping=mapping).role_of(claims) == role


def test_role_claim_is_configurable():
    v = validator(Fetch(RSA), role_claim="smg_role")
    assert check(v, RSA.sign(claims_for(ISS, AUD, smg_role="admin", roles=["user"]))).role == "admin"


def test_role_mapping_parsing():
    assert parse_role_mapping(["Gateway.Admin=admin", "a=b=USER"]) == {"Gateway.Admin": "admin", "a=b": "user"}
    for bad in (["Admins"], ["=admin"], ["Admins=root"]):
        with pytest.raises(ConfigError):
            parse_role_mapping(bad)


# -- key rotation, refresh limits, failures -------------------------------------------------

def test_unknown_kid_refreshes_once_then_is_rate_limited():
    clock = Clock()
    f = Fetch(RSA)
    v = validator(f, clock)
    check(v, RSA.sign(claims_for(ISS, AUD)))
    f.keys.append(RSA2)  # the IdP rotates: a new key is published
    assert check(v, RSA2.sign(claims_for(ISS, AUD, roles=["admin"]))).role == "admin"
    assert len(f.calls) == 2
    ghost = SigningKey.rsa("ghost")
    clock.t += 1
    assert "Key not found for kid: ghost" in refused(v, ghost.sign(claims_for(ISS, AUD)))
    assert len(f.calls) == 2  # within MISS_REFRESH_SECS of the last kid-driven fetch: none
    clock.t += MISS_REFRESH_SECS
    assert "ghost" in refused(v, ghost.sign(claims_for(ISS, AUD)))
    assert len(f.calls) == 3


def test_cache_expires_after_its_ttl():
    clock = Clock()
    f = Fetch(RSA)
    v = validator(f, clock)
    check(v, RSA.sign(claims_for(ISS, AUD)))
    clock.t += 3599
    assert type(v.validate(RSA.sign(claims_for(ISS, AUD)))) is Principal
    clock.t += 2
    assert check(v, RSA.sign(claims_for(ISS, AUD))).id and len(f.calls) == 2


def test_failed_fetch_refuses_and_is_not_retried_at_once():
    clock = Clock()
    f = Fetch(RSA, fail=UpstreamTimeout("GET /jwks timed out"))
    v = validator(f, clock)
    assert "Failed to get signing key" in refused(v, RSA.sign(claims_for(ISS, AUD)))
    assert "timed out" in refused(v, RSA.sign(claims_for(ISS, AUD)))
    assert len(f.calls) == 1
    clock.t += RETRY_SECS
    f.fail = None
    assert check(v, RSA.sign(claims_for(ISS, AUD))).id and len(f.calls) == 2


def test_concurrent_tokens_share_one_fetch_and_a_leaving_client_does_not_cancel_it():
    f = Fetch(RSA)
    v = validator(f)

    async def scenario():
        f.gate = asyncio.Event()
        tasks = [asyncio.ensure_future(v.validate(RSA.sign(claims_for(ISS, AUD)))) for _ in range(5)]
        await asyncio.sleep(0)
        tasks[0].cancel()  # one client hangs up while it waits
        await asyncio.sleep(0)
        f.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert len(f.calls) == 1
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(type(r) is Principal for r in results[1:])


def test_prefetch_fills_the_cache_and_never_raises():
    f = Fetch(RSA)
    v = validator(f)
    asyncio.run(v.prefetch())
    assert type(v.validate(RSA.sign(claims_for(ISS, AUD)))) is Principal and len(f.calls) == 1
    broken = validator(Fetch(RSA, fail=UpstreamTimeout("down")))
    asyncio.run(broken.prefetch())  # logged, not raised
    assert "Failed to get signing key: down" in refused(broken, RSA.sign(claims_for(ISS, AUD)))


def test_discovered_uri_must_pass_the_ssrf_rules():
    class Evil(Fetch):
        async def __call__(self, url):
            self.calls.append(url)
            return {"jwks_uri": "https://169.254.169.254/keys"}

    f = Evil()
    v = validator(f, jwks_uri=None)
    assert "private or internal" in refused(v, RSA.sign(claims_for(ISS, AUD)))
    assert f.calls == [ISS + "/.well-known/openid-configuration"]


# -- the sans-I/O cache --------------------------------------------------------------------

def test_cache_verdicts():
    clock = Clock()
    c = JwksCache(clock)
    assert c.lookup("k1") is FETCH
    c.fetching(FETCH)
    c.store(parse_jwks({"keys": [RSA.public_jwk()]}))
    assert c.lookup("k1").algorithm_name == "RS256"
    assert c.lookup("k2") is FETCH_FOR_KID
    c.fetching(FETCH_FOR_KID)
    with pytest.raises(JwtError):
        c.lookup("k2")
    clock.t += MISS_REFRESH_SECS
    assert c.lookup("k2") is FETCH_FOR_KID


def test_parse_jwks_keeps_only_asymmetric_signing_keys_with_a_kid():
    oct_key = {"kty": "oct", "kid": "h1", "k": "c2VjcmV0", "alg": "HS256"}
    no_kid = {k: v for k, v in RSA.public_jwk().items() if k != "kid"}
    enc = dict(RSA2.public_jwk(), use="enc")
    hs_labelled = dict(RSA.public_jwk(), kid="lie", alg="HS256")
    keys = parse_jwks({"keys": [oct_key, no_kid, enc, hs_labelled, EC.public_jwk(with_alg=False), "junk"]})
    assert sorted(keys) == ["e1"] and keys["e1"].algorithm_name == "ES256"
    for bad in ({"keys": [oct_key]}, {}, [], {"keys": "x"}):
        with pytest.raises(JwtError):
            parse_jwks(bad)


@pytest.mark.parametrize("url, ok", [
    ("https://login.example.com/.well-known/jwks.json", True),
    ("http://127.0.0.1:8080/jwks", True), ("http://localhost/jwks", True), ("http://[::1]:9/jwks", True),
    ("http://login.example.com/jwks", False), ("ftp://example.com/jwks", False), ("file:///etc/passwd", False),
    ("https://10.0.0.1/jwks", False), ("https://192.168.1.1/jwks", False), ("https://127.0.0.1/jwks", False),
    ("https://169.254.169.254/jwks", False), ("https://100.64.0.1/jwks", False),
    ("https://metadata.google.internal/jwks", False), ("https://idp.svc.cluster.local/jwks", False),
    ("https://[fd00::1]/jwks", False),
])
def test_url_rules(url, ok):
    if ok:
        assert check_url(url, "--jwt-jwks-uri") == url
    else:
        with pytest.raises(ConfigError):
            check_url(url, "--jwt-jwks-uri")
