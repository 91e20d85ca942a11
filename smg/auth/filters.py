"""The auth filters of the request pipeline (smg/server/filters.py): the first stage
of every route that needs one.

- ``DataPlaneAuth`` (proxied inference routes): the request carries one of the
  gateway's data-plane keys — the shared ``--api-key`` or a ``--tenant-api-key`` —
  as ``Authorization: Bearer`` or ``x-api-key``; else 401 with
  ``WWW-Authenticate: Bearer``.
- ``ControlPlaneAuth`` (the Workers API and admin routes): a bearer credential is
  checked as a JWT first (when JWT auth is configured and the token has three
  dot-separated parts — such a token that fails is refused, never retried as an API
  key), else against the control-plane keys; a missing or unknown credential gets
  401 with ``WWW-Authenticate: Bearer realm="control-plane"``, a principal without
  the admin role 403. The same filter serves SMG's fall-backs: with no control-plane
  auth configured its keys are the shared ``--api-key`` alone; with only tenant keys
  configured it has none and refuses everyone.
- ``AuditOnly``: an open control plane with ``--control-plane-audit-enabled`` still
  writes its audit lines.

Rules:
- A filter is ``f(conn, ctx)``: None (continue) after setting ``ctx.principal``, a
  ``Reply`` (the API family's error body, made by the ``reply`` class the gateway
  injects: this layer does not import the server's), or an awaitable (a JWT whose
  signing keys must be fetched first; the pipeline parks the request meanwhile).
- The refusals are built once; admitting a request allocates nothing.
- Nothing a client sent is echoed in an answer or a log line except the reason a JWT
  was refused.
"""
from __future__ import annotations

from smg.auth.audit import DENIED, SUCCESS
from smg.auth.jwt import JwtError
from smg.auth.keys import AUTHORIZATION, X_API_KEY, bearer_token
from smg.auth.principal import Principal

WWW_DATA = [(b"www-authenticate", b"Bearer")]
WWW_CONTROL = [(b"www-authenticate", b'Bearer realm="control-plane"')]
ADMIN_REQUIRED = "Admin role required for control plane access"


class DataPlaneAuth:
    __slots__ = ("keys", "_seen", "_refused")

    def __init__(self, keys, reply) -> None:
        self.use(keys)
        self._refused = reply(401, "missing or invalid API key (send Authorization: Bearer <key> or x-api-key)",
                              "invalid_api_key", WWW_DATA)

    def use(self, keys) -> None:
        """Verifies against ``keys`` (a ``KeyTable``) from now on: at start-up, and when
        a configuration reload rotates the keys (values verified before are forgotten)."""
        self.keys = keys  # smg.auth.keys.KeyTable
        self._seen = keys.seen[AUTHORIZATION]  # Authorization values already verified

    def __call__(self, conn, ctx):
        # KeyTable.from_headers inline: a credential already verified is one dict probe
        auth = xkey = None
        for n, v in ctx.headers:
            if n == AUTHORIZATION:
                auth = v
            elif n == X_API_KEY:
                xkey = v
        if auth is not None and type(auth) is bytes:
            p = self._seen.get(auth)
            if p is not None:
                ctx.principal = p
                return None
        p = self.keys.from_values(auth, xkey)
        if p is None:
            return self._refused
        ctx.principal = p
        return None


class ControlPlaneAuth:
    __slots__ = ("keys", "jwt", "audit", "reply", "_missing", "_invalid", "_forbidden")

    def __init__(self, keys, jwt, audit, reply) -> None:
        self.keys = keys    # smg.auth.keys.KeyTable (control-plane keys, or a fall-back's)
        self.jwt = jwt      # smg.auth.jwt.JwtValidator or None
        self.audit = audit  # smg.auth.audit.Audit or None
        self.reply = reply
        self._missing = reply(401, "Missing or invalid Authorization header", "invalid_api_key", WWW_CONTROL)
        self._invalid = reply(401, "Invalid authentication token", "invalid_api_key", WWW_CONTROL)
        self._forbidden = reply(403, ADMIN_REQUIRED, "forbidden")

    def __call__(self, conn, ctx):
        token = None
        for n, v in ctx.headers:
            if n == AUTHORIZATION:
                token = bearer_token(v)
                break
        if token is None:
            return self._refuse(ctx, self._missing)
        jwt = self.jwt
        if jwt is not None and token.count(b".") == 2:
            try:
                r = jwt.validate(token.decode("latin-1"))
            except JwtError as e:
                return self._jwt_refused(ctx, e)
            if type(r) is Principal:
                return self._authorize(ctx, r)
            return self._later(ctx, r)
        p = self.keys.lookup(token)
        if p is None:
            return self._refuse(ctx, self._invalid)
        return self._authorize(ctx, p)

    async def _later(self, ctx, pending):
        try:
            p = await pending
        except JwtError as e:
            return self._jwt_refused(ctx, e)
        return self._authorize(ctx, p)

    def _jwt_refused(self, ctx, e: JwtError):
        return self._refuse(ctx, self.reply(401, f"Invalid JWT: {e}", "invalid_token", WWW_CONTROL))

    def _refuse(self, ctx, reply):
        if self.audit is not None:
            self.audit.event(ctx, DENIED, None, reply.message)
        return reply

    def _authorize(self, ctx, p: Principal):
        if not p.is_admin:
            if self.audit is not None:
                self.audit.event(ctx, DENIED, p, ADMIN_REQUIRED)
            return self._forbidden
        ctx.principal = p
        if self.audit is not None:
            self.audit.event(ctx, SUCCESS, p)
        return None


class AuditOnly:
    __slots__ = ("audit",)

    def __init__(self, audit) -> None:
        self.audit = audit

    def __call__(self, conn, ctx):
        self.audit.event(ctx, SUCCESS, None, "no control-plane authentication is configured")
        return None
