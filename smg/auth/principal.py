"""Principal: who a request was authenticated as, written to ``ctx.principal`` by the
auth filters (smg/auth/filters.py) and read by later stages.

Rules:
- A principal is immutable once made; the key tables build theirs once at start-up
  (one per configured key), so authenticating a request allocates nothing.
- ``tenant_id`` is the bare tenant id of a data-plane key: the ``TENANT`` of
  ``--tenant-api-key TENANT:KEY``, or, for the shared ``--api-key``, the SHA-256 of
  the key in hex (SMG's identity for it). ``tenant_key`` is the canonical form tenant
  resolution uses, ``auth:<tenant_id>``. Control-plane principals have no tenant.
- ``consumed_header`` names the request header whose credential was one of the
  gateway's own keys; the upstream leg never forwards that header to a worker (the
  worker has its own key, or none).
- ``repr`` never shows a secret (a principal holds none).
"""
from __future__ import annotations

ADMIN = "admin"
USER = "user"
ROLES = (ADMIN, USER)

# how the principal was authenticated (``via``; the audit log's auth_method)
VIA_API_KEY = "api_key"                    # the shared --api-key
VIA_TENANT_KEY = "tenant_api_key"          # a --tenant-api-key
VIA_CONTROL_KEY = "control_plane_api_key"  # a --control-plane-api-keys entry
VIA_JWT = "jwt"                            # a JWT checked against the IdP's JWKS
VIA_NONE = "none"                          # nobody (audit lines of refused requests)


class Principal:
    __slots__ = ("id", "name", "role", "tenant_id", "via", "consumed_header", "tenant_key")

    def __init__(self, id: str, name: str | None, role: str, via: str, tenant_id: str | None = None,
                 consumed_header: bytes | None = None) -> None:
        self.id = id
        self.name = name
        self.role = role
        self.via = via
        self.tenant_id = tenant_id
        self.consumed_header = consumed_header
        self.tenant_key = None if tenant_id is None else "auth:" + tenant_id

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def with_header(self, header: bytes) -> "Principal":
        """The same principal, authenticated through ``header`` (a new record)."""
        return Principal(self.id, self.name, self.role, self.via, self.tenant_id, header)

    def __setattr__(self, name, value) -> None:
        if hasattr(self, "tenant_key"):
            raise AttributeError("Principal is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"Principal(id={self.id!r}, role={self.role}, via={self.via}, tenant={self.tenant_key})"
