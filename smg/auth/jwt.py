"""JWT/OIDC validation for the control plane (``--jwt-issuer``, ``--jwt-audience``,
``--jwt-jwks-uri``, ``--jwt-role-claim``, ``--jwt-role-mapping``), with pyjwt.

Rules (SMG's, crates/auth):
- Only asymmetric algorithms are accepted: RS256, RS384, RS512, ES256, ES384. The
  token's ``alg`` must be one of them *and* equal the algorithm of the JWKS key its
  ``kid`` names; pyjwt is given exactly that one algorithm. So ``alg: none`` and
  HS256 signed with the public key (algorithm confusion) are refused before any
  signature check, and symmetric (``oct``) keys in a JWKS are never loaded.
- ``kid`` is required; ``exp``, ``iss`` and ``aud`` are required and checked
  (``iss`` equal to ``--jwt-issuer``, ``aud`` containing ``--jwt-audience``);
  ``exp``, ``nbf`` and ``iat`` get ``LEEWAY_SECS`` of clock skew. Time claims are
  wall-clock times and pyjwt checks them against the wall clock; every other time
  (cache age, refresh limits) is read from the injected monotonic ``clock``.
- The role comes from the ``--jwt-role-claim`` claim (a string or a list of strings);
  only when that claim is absent are ``role``, ``roles``, ``groups``, ``group`` read.
  Without ``--jwt-role-mapping`` a value ``admin``/``user`` (any case) is the role;
  with a mapping only mapped values count. No role found: ``user``. Values naming both
  roles give the most privileged, ``admin`` (RBAC's union of a subject's roles, and
  independent of the order an IdP lists them in). Divergence from SMG, deliberately:
  its ``extract_role`` takes the first recognised value, so there the same subject is
  admin or user depending on that order.
- The JWKS (from ``--jwt-jwks-uri``, else discovered from
  ``<issuer>/.well-known/openid-configuration``) is fetched with the control-plane
  client (smg/upstream/client.py; bounded by ``FETCH_TIMEOUT_SECS`` and
  ``MAX_DOCUMENT_BYTES``, no redirects), cached for ``JWKS_CACHE_TTL_SECS``, and
  fetched again when a token names an unknown ``kid`` (key rotation) — at most once
  per ``MISS_REFRESH_SECS``, since a ``kid`` is the caller's to choose. Concurrent
  requests share one fetch. A failed fetch is not retried for ``RETRY_SECS``; tokens
  that need it are refused meanwhile (401, as SMG).
- URLs must be ``https://``; ``http://`` only for localhost, 127.0.0.1 and ::1. An
  ``https://`` URL naming a private, loopback or link-local address, or a host under
  ``.internal``/``.local``, is refused (SMG's SSRF rules; checked at start-up for the
  configured URLs, at discovery for the discovered one).
- ``JwksCache`` is the sans-I/O core (what to fetch and when); ``JwtValidator`` does
  the fetching and the decoding. Neither logs a token. pyjwt is imported only when
  JWT auth is configured (it and cryptography take ~0.1 s to import).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from urllib.parse import urlsplit

from smg.auth.principal import ADMIN, ROLES, USER, VIA_JWT, Principal
from smg.errors import ConfigError

log = logging.getLogger("smg.auth")

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384"})
LEEWAY_SECS = 30.0          # SMG's clock-skew tolerance
JWKS_CACHE_TTL_SECS = 3600.0  # SMG's JWKS cache lifetime
MISS_REFRESH_SECS = 30.0    # least time between fetches caused by unknown kids (attacker-chosen)
RETRY_SECS = 5.0            # after a failed fetch, no other for this long (the IdP is not hammered)
FETCH_TIMEOUT_SECS = 10.0   # SMG's JWKS client timeout
MAX_DOCUMENT_BYTES = 1024 * 1024  # SMG's JWKS response limit
ALTERNATE_ROLE_CLAIMS = ("role", "roles", "groups", "group")
DISCOVERY_PATH = "/.well-known/openid-configuration"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class JwtError(Exception):
    """A token refused, with the reason the 401 says (never the token)."""


def check_url(url: str, where: str) -> str:
    """``url`` if SMG's SSRF rules allow fetching it.

    Raises:
        ConfigError: naming ``where``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port
    except ValueError:
        raise ConfigError(where, f"{url!r} is not a valid URL") from None
    if not host:
        raise ConfigError(where, f"{url!r} has no host")
    if parts.scheme == "http":
        if host not in _LOCAL_HOSTS:
            raise ConfigError(where, f"{url!r}: only https:// is allowed (http:// only for localhost)")
        return url
    if parts.scheme != "https":
        raise ConfigError(where, f"{url!r}: only https:// is allowed")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        if name == "metadata" or name.endswith(".internal") or name.endswith(".local"):
            raise ConfigError(where, f"{url!r}: internal host names are not allowed") from None
        return url
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast \
            or ip.is_reserved or (ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10")):
        raise ConfigError(where, f"{url!r}: private or internal addresses are not allowed")
    return url


def parse_role_mapping(entries, where: str = "--jwt-role-mapping") -> dict:
    """``'IdpRole=admin'`` entries -> {IdpRole: role}."""
    out = {}
    for i, e in enumerate(entries, 1):
        idp, sep, role = e.rpartition("=")
        role = role.strip().lower()
        if not sep or not idp.strip():
            raise ConfigError(where, f"entry {i} ({e!r}) is not IDP_ROLE=ROLE")
        if role not in ROLES:
            raise ConfigError(where, f"entry {i} ({e!r}): the role must be admin or user")
        out[idp.strip()] = role
    return out


class JwtSettings:
    __slots__ = ("issuer", "audience", "jwks_uri", "role_claim", "role_mapping")

    def __init__(self, issuer: str, audience: str, jwks_uri: str | None = None, role_claim: str = "roles",
                 role_mapping: dict | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_uri = jwks_uri or None
        self.role_claim = role_claim or "roles"
        self.role_mapping = dict(role_mapping or {})

    @classmethod
    def from_config(cls, cfg) -> "JwtSettings | None":
        """None when JWT auth is off; ``ConfigError`` when it is half configured (SMG
        then silently leaves it off; a gateway must not run with an auth setting it
        ignores)."""
        given = [f for f, v in (("--jwt-issuer", cfg.jwt_issuer), ("--jwt-audience", cfg.jwt_audience)) if v]
        extra = cfg.jwt_jwks_uri or cfg.jwt_role_mapping or cfg.jwt_role_claim != "roles"
        if len(given) == 2:
            issuer = cfg.jwt_issuer
            check_url(issuer.rstrip("/") + DISCOVERY_PATH, "--jwt-issuer")
            if cfg.jwt_jwks_uri:
                check_url(cfg.jwt_jwks_uri, "--jwt-jwks-uri")
            return cls(issuer, cfg.jwt_audience, cfg.jwt_jwks_uri, cfg.jwt_role_claim,
                       parse_role_mapping(cfg.jwt_role_mapping))
        if given or extra:
            missing = "--jwt-audience" if given == ["--jwt-issuer"] else "--jwt-issuer"
            raise ConfigError(missing, "JWT authentication needs both --jwt-issuer and --jwt-audience")
        return None


def parse_jwks(doc) -> dict:
    """A JWKS document -> {kid: PyJWK} of its usable signing keys.

    Raises:
        JwtError: not a JWKS, or no usable key in it.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwtError("the JWKS document has no 'keys' list")
    import jwt as pyjwt  # here, not at the top: pyjwt + cryptography cost ~0.1 s to import

    keys = {}
    for k in doc["keys"]:
        if not isinstance(k, dict) or not isinstance(k.get("kid"), str) or k.get("kty") == "oct" \
                or k.get("use", "sig") != "sig":
            continue
        try:
            jwk = pyjwt.PyJWK(k)
        except (pyjwt.PyJWTError, ValueError, TypeError):
            continue
        if jwk.algorithm_name in ALGORITHMS:
            keys[k["kid"]] = jwk
    if not keys:
        raise JwtError("the JWKS has no usable signing key")
    return keys


FETCH = "fetch"            # lookup verdicts: the keys must be fetched first
FETCH_FOR_KID = "fetch-for-kid"


class JwksCache:
    """Which signing keys are known, and when fetching them again is allowed."""

    __slots__ = ("clock", "ttl", "miss_interval", "retry_interval", "keys", "fetched_at", "miss_fetch_at",
                 "failed_at", "error", "fetches")

    def __init__(self, clock, ttl: float = JWKS_CACHE_TTL_SECS, miss_interval: float = MISS_REFRESH_SECS,
                 retry_interval: float = RETRY_SECS) -> None:
        self.clock = clock
        self.ttl = ttl
        self.miss_interval = miss_interval
        self.retry_interval = retry_interval
        self.keys: dict = {}
        self.fetched_at: float | None = None
        self.miss_fetch_at: float | None = None
        self.failed_at: float | None = None
        self.error = ""
        self.fetches = 0

    def lookup(self, kid: str):
        """The key for ``kid``, or FETCH / FETCH_FOR_KID (fetch, then look again).

        Raises:
            JwtError: unknown ``kid`` and no fetch allowed now.
        """
        now = self.clock()
        if self.fetched_at is not None and now - self.fetched_at < self.ttl:
            key = self.keys.get(kid)
            if key is not None:
                return key
            if self.miss_fetch_at is not None and now - self.miss_fetch_at < self.miss_interval:
                raise JwtError(f"Key not found for kid: {kid}")
            verdict = FETCH_FOR_KID
        else:
            verdict = FETCH
        if self.failed_at is not None and now - self.failed_at < self.retry_interval:
            if verdict is FETCH_FOR_KID:
                raise JwtError(f"Key not found for kid: {kid}")
            raise JwtError(f"Failed to get signing key: {self.error}")
        return verdict

    def fetching(self, verdict: str) -> None:
        """A fetch starts because of ``verdict``."""
        self.fetches += 1
        if verdict is FETCH_FOR_KID:
            self.miss_fetch_at = self.clock()

    def store(self, keys: dict) -> None:
        self.keys = keys
        self.fetched_at = self.clock()
        self.failed_at = None

    def failed(self, error: str) -> None:
        self.failed_at = self.clock()
        self.error = error


async def fetch_json(url: str):
    """GET ``url`` as JSON with the control-plane client (bounded; no redirects).

    Raises:
        UpstreamError: connection failure, timeout, non-2xx, oversized or not JSON.
    """
    from smg.upstream import client

    parts = urlsplit(url)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return await client.get_json(f"{parts.scheme}://{parts.netloc}", path, timeout=FETCH_TIMEOUT_SECS,
                                 limit=MAX_DOCUMENT_BYTES)


class JwtValidator:
    """Validates a bearer token; fetches the IdP's keys when it must."""

    def __init__(self, settings: JwtSettings, clock, fetch=fetch_json) -> None:
        self.settings = settings
        self.cache = JwksCache(clock)
        self._fetch = fetch
        self._jwks_uri = settings.jwks_uri
        self._flight: asyncio.Future | None = None

    def validate(self, token: str):
        """A ``Principal``, or an awaitable resolving to one (the keys must be fetched).

        Raises:
            JwtError: the token is refused (also raised by the awaitable).
        """
        import jwt as pyjwt

        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise JwtError("Invalid token format") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise JwtError(f"Unsupported algorithm: {alg!r}" if isinstance(alg, str) else "Unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JwtError("Token header missing 'kid' claim")
        key = self.cache.lookup(kid)
        if key is FETCH or key is FETCH_FOR_KID:
            return self._after_fetch(token, alg, kid, key)
        return self._decode(token, alg, key)

    async def prefetch(self) -> None:
        """Fetches the signing keys now (at start-up: discovery problems show at once,
        and the first token does not wait); failures are logged, never raised."""
        if self._flight is None:
            self.cache.fetching(FETCH)
            self._flight = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._flight)

    async def _after_fetch(self, token: str, alg: str, kid: str, verdict: str) -> Principal:
        flight = self._flight
        if flight is None:
            self.cache.fetching(verdict)
            flight = self._flight = asyncio.ensure_future(self._refresh())
        # shielded: a client that leaves must not cancel the fetch others wait on
        await asyncio.shield(flight)
        key = self.cache.keys.get(kid)
        if key is None:
            if self.cache.failed_at is not None and not self.cache.keys:
                raise JwtError(f"Failed to get signing key: {self.cache.error}")
            raise JwtError(f"Key not found for kid: {kid}")
        return self._decode(token, alg, key)

    async def _refresh(self) -> None:
        try:
            if self._jwks_uri is None:
                url = self.settings.issuer.rstrip("/") + DISCOVERY_PATH
                doc = await self._fetch(url)
                uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
                if not isinstance(uri, str):
                    raise JwtError(f"the OIDC discovery document at {url} names no jwks_uri")
                try:
                    self._jwks_uri = check_url(uri, "jwks_uri")
                except ConfigError as e:
                    raise JwtError(f"discovered {e}") from None
            self.cache.store(parse_jwks(await self._fetch(self._jwks_uri)))
        except Exception as e:  # every failure is the same to a waiting request: no keys
            self.cache.failed(str(e) or type(e).__name__)
            log.warning("control-plane JWT: fetching the signing keys failed: %s", self.cache.error)
        finally:
            self._flight = None

    def _decode(self, token: str, alg: str, key) -> Principal:
        if key.algorithm_name != alg:
            raise JwtError(f"Algorithm mismatch: token uses {alg} but key requires {key.algorithm_name}")
        import jwt as pyjwt

        s = self.settings
        try:
            claims = pyjwt.decode(token, key.key, algorithms=[alg], audience=s.audience, issuer=s.issuer,
                                  leeway=LEEWAY_SECS, options={"require": ["exp", "iss", "aud"]})
        except pyjwt.PyJWTError as e:
            raise JwtError(str(e) or type(e).__name__) from None
        subject = next((v for v in (claims.get("sub"), claims.get("email"), claims.get("preferred_username"))
                        if isinstance(v, str) and v), "unknown")
        name = claims.get("name")
        return Principal(subject, name if isinstance(name, str) else None, self.role_of(claims), VIA_JWT,
                         consumed_header=b"authorization")

    def role_of(self, claims: dict) -> str:
        s = self.settings
        if s.role_claim in claims:
            values = _strings(claims[s.role_claim])
        else:
            values = [v for c in ALTERNATE_ROLE_CLAIMS for v in _strings(claims.get(c))]
        mapping = s.role_mapping
        for v in values:
            if (mapping.get(v) if mapping else v.lower()) == ADMIN:
                return ADMIN  # the most privileged role named wins
        return USER


def _strings(v) -> list:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    return []
