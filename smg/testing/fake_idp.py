"""A fake OIDC identity provider on 127.0.0.1, and the signing keys and tokens JWT
tests need.

``FakeIdP`` serves, one request per connection (``Connection: close``):

- ``GET /.well-known/openid-configuration``: ``{"issuer", "jwks_uri"}``;
- ``GET /jwks``: ``{"keys": [...]}``, the public JWKs of ``keys`` (a list the test
  changes to rotate keys); ``hits`` counts the requests per path.

``SigningKey.rsa(kid)`` / ``SigningKey.ec(kid)`` make a key pair (``cryptography``),
``sign(claims)`` a token (pyjwt). ``unsigned(claims, kid)`` builds an ``alg: none``
token and ``hs256_with_public_key(key, claims)`` the algorithm-confusion forgery (HMAC
keyed with the RSA public key's PEM), both by hand since pyjwt refuses to make them.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import orjson

__all__ = ["FakeIdP", "SigningKey", "claims_for", "unsigned", "hs256_with_public_key"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, kid: str, alg: str, private) -> None:
        self.kid = kid
        self.alg = alg
        self.private = private

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256") -> "SigningKey":
        from cryptography.hazmat.primitives.asymmetric import rsa

        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> "SigningKey":
        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def public_jwk(self, with_alg: bool = True) -> dict:
        import jwt

        algo = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        d = algo.to_jwk(self.private.public_key(), as_dict=True)
        d.update(kid=self.kid, use="sig")
        if with_alg:
            d["alg"] = self.alg
        return d

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict, kid: str | None = None, alg: str | None = None) -> str:
        import jwt

        return jwt.encode(claims, self.private, algorithm=alg or self.alg,
                          headers={"kid": self.kid if kid is None else kid})


def claims_for(issuer: str, audience: str, roles=None, lifetime: float = 300.0, **extra) -> dict:
    now = int(time.time())
    c = {"iss": issuer, "aud": audience, "sub": "alice@example.com", "iat": now, "exp": now + int(lifetime)}
    if roles is not None:
        c["roles"] = roles
    c.update(extra)
    return c


def unsigned(claims: dict, kid: str) -> str:
    head = _b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": kid}))
    return f"{head}.{_b64(orjson.dumps(claims))}."


def hs256_with_public_key(key: SigningKey, claims: dict) -> str:
    head = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}))
    signing_input = f"{head}.{_b64(orjson.dumps(claims))}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


class FakeIdP:
    def __init__(self) -> None:
        self.keys: list = []          # SigningKey objects whose public JWKs /jwks serves
        self.extra_jwks: list = []    # raw JWK dicts served as well (oct keys and the like)
        self.hits: dict = {}
        self.server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks"

    async def start(self) -> "FakeIdP":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1].decode()
            self.hits[path] = self.hits.get(path, 0) + 1
            doc: dict
            if path == "/.well-known/openid-configuration":
                status, doc = 200, {"issuer": self.url, "jwks_uri": self.jwks_uri}
            elif path == "/jwks":
                status, doc = 200, {"keys": [k.public_jwk() for k in self.keys] + list(self.extra_jwks)}
            else:
                status, doc = 404, {"error": "not found"}
            body = orjson.dumps(doc)
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
