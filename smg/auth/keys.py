"""The gateway's own API keys: the shared ``--api-key``, per-tenant keys
(``--tenant-api-key TENANT:KEY``) and control-plane keys (``--control-plane-api-keys
'id:name:role:key'``), parsed from the settings and looked up per request.

Rules:
- A key is held only as its SHA-256 digest; the plain key is dropped after parsing and
  never logged or echoed (errors name the entry's position or id, never its key).
- Lookup hashes the presented token and finds its digest in a dict, then confirms the
  match with ``hmac.compare_digest``. A digest-keyed lookup leaks nothing a timing
  attacker can use: a guess "close" to a key has an unrelated digest (SMG keys its
  table the same way). One hash and one dict probe per request, however many keys.
- Verified credentials are remembered: once a presented token has matched a key that
  way, it goes into a dict (per header) from the token's bytes to its principal, and
  so does the whole header value it came in (``Bearer <key>`` as the client spelled
  it): the next request presenting it costs one dict probe instead of a SHA-256 and
  the Bearer parsing. That probe is keyed by Python's SipHash of the bytes, whose key
  is secret per process, so its timing says nothing about how "close" a wrong guess
  is; a credential not in it (every wrong one) still goes the digest way. Only
  credentials holding a configured key get in (a SHA-256 match), at most
  ``SPELLINGS_PER_KEY`` header spellings per key, so the dicts are bounded by the
  table's size; these are bytes the gateway reads in every request's headers anyway,
  and like the digests they are never logged, echoed or shown by ``repr``.
- Credentials are read from ``Authorization: Bearer <token>`` (the scheme matched
  case-insensitively, RFC 9110 §11.1) and, where the caller allows it (the data plane,
  for the Anthropic SDK), from ``x-api-key``.
- Malformed entries are configuration errors (``ConfigError`` naming the flag), found
  at start-up: a key that is accepted but cannot match would be a silent hole.
"""
from __future__ import annotations

import hashlib
import hmac

from smg.auth.principal import ADMIN, ROLES, USER, VIA_API_KEY, VIA_CONTROL_KEY, VIA_TENANT_KEY, Principal
from smg.errors import ConfigError

AUTHORIZATION = b"authorization"
X_API_KEY = b"x-api-key"
HEADERS = (AUTHORIZATION, X_API_KEY)


def digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def bearer_token(value: bytes | None) -> bytes | None:
    """The token of a ``Bearer`` credential, or None (another scheme, or empty)."""
    if value is None:
        return None
    if value.startswith(b"Bearer ") and len(value) > 7 and value[7] != 32 and value[-1] not in (32, 9):
        return value[7:]  # the common spelling, in one slice
    scheme, sep, rest = value.partition(b" ")
    if not sep or scheme.lower() != b"bearer":
        return None
    token = rest.strip(b" \t")
    return token or None


# Header spellings of one key remembered (``Bearer k``, ``bearer k``, ``Bearer k `` ...):
# a client uses one; a key holder sending endless variants only gets the digest path.
SPELLINGS_PER_KEY = 4


class KeyTable:
    """SHA-256 digest of a key -> the principals it authenticates (one per header),
    and the credentials already verified (per header: token bytes -> principal, and
    ``seen``: whole header value -> principal)."""

    __slots__ = ("_by_digest", "_verified", "seen")

    def __init__(self) -> None:
        self._by_digest: dict = {}
        self._verified: dict = {h: {} for h in HEADERS}
        self.seen: dict = {h: {} for h in HEADERS}   # read by DataPlaneAuth's fast path

    def add(self, key: str, principal: Principal) -> None:
        d = digest(key.encode())
        if d in self._by_digest:
            raise ValueError("duplicate key")
        self._by_digest[d] = (d, {h: principal.with_header(h) for h in HEADERS})

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"KeyTable({len(self._by_digest)} keys)"

    def lookup(self, token: bytes, header: bytes = AUTHORIZATION) -> Principal | None:
        verified = self._verified[header]
        if type(token) is bytes:
            p = verified.get(token)
            if p is not None:
                return p
        d = digest(token)
        hit = self._by_digest.get(d)
        if hit is None or not hmac.compare_digest(hit[0], d):
            return None
        p = hit[1][header]
        if type(token) is bytes and len(verified) < len(self._by_digest):
            verified[token] = p  # equal to a configured key: at most one entry per key
        return p

    def from_headers(self, headers: list, x_api_key: bool) -> Principal | None:
        """The principal of the request's credential: ``Authorization: Bearer`` first,
        then (if ``x_api_key``) ``x-api-key``; None when neither matches a key."""
        auth = xkey = None
        for n, v in headers:
            if n == AUTHORIZATION:
                auth = v
            elif n == X_API_KEY:
                xkey = v
        if auth is not None and type(auth) is bytes:
            p = self.seen[AUTHORIZATION].get(auth)
            if p is not None:
                return p
        return self.from_values(auth, xkey if x_api_key else None)

    def from_values(self, auth: bytes | None, xkey: bytes | None) -> Principal | None:
        """``from_headers`` once the two header values are found: ``auth`` the
        ``Authorization`` value, ``xkey`` the ``x-api-key`` one (None: absent, or not to
        be read). A value that holds a key is remembered (``seen``)."""
        token = bearer_token(auth)
        if token is not None:
            p = self.lookup(token, AUTHORIZATION)
            if p is not None:
                self._remember(AUTHORIZATION, auth, p)
                return p
        if xkey:
            seen = self.seen[X_API_KEY].get(xkey) if type(xkey) is bytes else None
            if seen is not None:
                return seen
            p = self.lookup(xkey.strip(b" \t"), X_API_KEY)
            if p is not None:
                self._remember(X_API_KEY, xkey, p)
            return p
        return None

    def _remember(self, header: bytes, value, p: Principal) -> None:
        seen = self.seen[header]
        if type(value) is bytes and value not in seen and len(seen) < SPELLINGS_PER_KEY * len(self._by_digest):
            seen[value] = p


def _check_key(key: str, where: str, what: str) -> str:
    if not key:
        raise ConfigError(where, f"{what}: the key is empty")
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ConfigError(where, f"{what}: the key must be printable ASCII without spaces")
    return key


def shared_key(api_key: str) -> Principal:
    """The principal of the shared ``--api-key`` (tenant: the key's SHA-256, as SMG)."""
    return Principal(VIA_API_KEY, None, ADMIN, VIA_API_KEY, tenant_id=digest(api_key.encode()).hex())


def parse_tenant_keys(entries, where: str = "--tenant-api-key") -> list:
    """``TENANT:KEY`` entries -> [(tenant_id, key)] (the key may contain ``:``)."""
    out = []
    for i, e in enumerate(entries, 1):
        tenant, sep, key = e.partition(":")
        what = f"entry {i}"
        if not sep or not tenant.strip():
            raise ConfigError(where, f"{what} is not TENANT_ID:KEY")
        out.append((tenant.strip(), _check_key(key, where, f"entry {i} (tenant {tenant.strip()!r})")))
    return out


def parse_control_plane_keys(entries, where: str = "--control-plane-api-keys") -> list:
    """``id:name:role:key`` entries -> [(id, name, role, key)]; role is admin|user."""
    out = []
    seen = set()
    for i, e in enumerate(entries, 1):
        parts = e.split(":", 3)
        if len(parts) != 4 or not parts[0].strip():
            raise ConfigError(where, f"entry {i} is not id:name:role:key")
        kid, name, role, key = parts[0].strip(), parts[1].strip(), parts[2].strip().lower(), parts[3]
        if role not in ROLES:
            raise ConfigError(where, f"entry {i} (id {kid!r}): role must be admin or user, got {parts[2]!r}")
        if kid in seen:
            raise ConfigError(where, f"entry {i}: id {kid!r} is used twice")
        seen.add(kid)
        out.append((kid, name, role, _check_key(key, where, f"entry {i} (id {kid!r})")))
    return out


def data_plane_table(api_key: str, tenant_keys: list) -> KeyTable:
    """The keys that open the data plane: the shared key and every tenant key."""
    t = KeyTable()
    if api_key:
        t.add(_check_key(api_key, "--api-key", "the key"), shared_key(api_key))
    for tenant, key in tenant_keys:
        try:
            t.add(key, Principal(tenant, None, USER, VIA_TENANT_KEY, tenant_id=tenant))
        except ValueError:
            raise ConfigError("--tenant-api-key", f"tenant {tenant!r}: its key is already configured") from None
    return t


def shared_key_table(api_key: str) -> KeyTable:
    """The control plane's fall-back when no control-plane auth is configured: the
    shared key alone (tenant keys are refused there, as in SMG)."""
    t = KeyTable()
    if api_key:
        t.add(api_key, shared_key(api_key))
    return t


def control_plane_table(entries: list) -> KeyTable:
    t = KeyTable()
    for kid, name, role, key in entries:
        try:
            t.add(key, Principal(kid, name or None, role, VIA_CONTROL_KEY))
        except ValueError:
            raise ConfigError("--control-plane-api-keys", f"id {kid!r}: its key is already configured") from None
    return t
