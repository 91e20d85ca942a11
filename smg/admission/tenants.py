"""Tenant resolution: the canonical tenant key of a request (SMG's four forms).

A request's tenant is, in this order (SMG's ``tenant_resolution`` middleware):

1. ``auth:<id>`` when auth authenticated it with a tenant's key (``--tenant-api-key
   TENANT:KEY``): the auth filter sets ``ctx.principal``, whose ``tenant_id`` names it;
2. ``header:<value>`` from ``--tenant-header-name`` (``x-smg-tenant-id``), only with
   ``--trust-tenant-header``: the value trimmed, a blank one counting as absent;
3. ``ip:<address>`` of the client connection (``conn.peer``);
4. ``anonymous`` when there is none of these (a Unix socket, a test transport).

Rules:
- The filter writes ``ctx.tenant`` (a ``str``) and never refuses a request, except a
  trusted header whose value is not 1..``MAX_TENANT_ID_BYTES`` visible ASCII
  characters (400 in the API's format, a ``Reply`` made by the ``reply`` class the
  gateway injects: this layer does not import the server's): the key is kept per
  tenant by the rate limiter, and a value that cannot be a tenant id is a proxy's
  misconfiguration, better reported than silently charged to the client's IP.
- Without ``--trust-tenant-header`` the header is never read: any client can send it.
- The resolver runs after auth and before everything that reads ``ctx.tenant`` (the
  tenant rate limit, the priority scheduler); it is in the chain only when one of them
  is configured (``needs_tenant``), so it costs nothing otherwise.
"""
from __future__ import annotations

import logging

from smg.errors import ConfigError

log = logging.getLogger("smg.tenants")

AUTH = "auth:"
HEADER = "header:"
IP = "ip:"
ANONYMOUS = "anonymous"
KEY_FORMS = (AUTH + "<id>", HEADER + "<value>", IP + "<address>", ANONYMOUS)

# A trusted tenant header's value is stored as part of a tenant key for as long as the
# tenant is tracked; 256 bytes holds any id a proxy sets (UUIDs, slugs, emails, DNS
# names up to 253) while keeping a tracked tenant's key small.
MAX_TENANT_ID_BYTES = 256
DEFAULT_HEADER = "x-smg-tenant-id"


def needs_tenant(config) -> bool:
    """Whether any configured stage reads ``ctx.tenant`` (the resolver goes in the
    chain): the tenant rate limit, the priority scheduler (its tenant_policies clamp)."""
    return config.tenant_rate_limit_enabled or config.priority_scheduler_enabled


def _visible_ascii(value: bytes) -> bool:
    return all(0x21 <= c <= 0x7E for c in value)


def _header_name(name: str) -> bytes:
    n = name.strip().lower()
    if not n or not n.isascii() or any(not (0x21 <= ord(c) <= 0x7E) or c in '":(),/;<=>?@[\\]{}' for c in n):
        raise ConfigError("--tenant-header-name", f"{name!r} is not a header name")
    return n.encode()


class TenantResolver:
    """The tenant filter: ``resolver(conn, ctx)`` sets ``ctx.tenant``.

    ``reply(status, message, code)``: the pipeline's error verdict (smg.server.filters.Reply).
    """

    __slots__ = ("header", "trust", "bad_header")

    def __init__(self, trust_header: bool, header_name: str, reply) -> None:
        """Raises:
            ConfigError: ``header_name`` is not a header name (names ``--tenant-header-name``).
        """
        self.trust = trust_header
        self.header = h = _header_name(header_name)
        self.bad_header = reply(400, f"header {h.decode()} must hold 1 to {MAX_TENANT_ID_BYTES} visible ASCII "
                                     "characters", "invalid_request")

    @classmethod
    def from_config(cls, config, reply) -> "TenantResolver | None":
        """The resolver, or None when nothing reads the tenant (then the tenant settings
        are reported as unused, never silently ignored).

        Raises:
            ConfigError: ``--tenant-header-name`` is not a header name.
        """
        resolver = cls(config.trust_tenant_header, config.tenant_header_name, reply)
        if not needs_tenant(config):
            if config.trust_tenant_header:
                log.warning("--trust-tenant-header has no effect: nothing reads the tenant "
                            "(--tenant-rate-limit-enabled and --priority-scheduler-enabled are off)")
            return None
        if not config.trust_tenant_header and config.tenant_header_name != DEFAULT_HEADER:
            log.warning("--tenant-header-name %s is not read without --trust-tenant-header",
                        config.tenant_header_name)
        return resolver

    def resolve(self, ctx, conn):
        """The tenant key of ``ctx`` (arrived on ``conn``, whose ``peer`` is read only
        when the key comes to the address), or a ``Reply`` when a trusted header holds no
        valid id."""
        principal = ctx.principal
        if principal is not None:
            key = getattr(principal, "tenant_key", None)   # smg.auth's Principal has it made
            if key:
                return key
            tid = getattr(principal, "tenant_id", None)
            if tid:
                return AUTH + tid
        if self.trust:
            name = self.header
            for n, v in ctx.headers:
                if n == name:
                    v = v.strip(b" \t")
                    if not v:
                        break  # blank: as if absent (SMG)
                    if len(v) > MAX_TENANT_ID_BYTES or not _visible_ascii(v):
                        return self.bad_header
                    return HEADER + v.decode("ascii")
        peer = conn.peer
        if peer:
            return IP + peer
        return ANONYMOUS

    def __call__(self, conn, ctx):
        p = ctx.principal
        if p is not None:  # resolve()'s first rule inline: an authenticated tenant (the hot path)
            key = getattr(p, "tenant_key", None)
            if key:
                ctx.tenant = key
                return None
        key = self.resolve(ctx, conn)
        if key is self.bad_header:
            return key
        ctx.tenant = key
        return None
