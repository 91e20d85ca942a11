"""Authentication and control-plane roles (SMG §11): the gateway's API keys, tenant
keys, control-plane keys with roles, JWT/OIDC, audit lines and the start-up security
posture.

``Auth(config, reply, clock)`` reads the settings once and says which filter each
route runs first (``stage(endpoint)``, by the endpoint's ``access``):

- ``"data"`` (proxied inference routes): ``DataPlaneAuth`` when ``--api-key`` or any
  ``--tenant-api-key`` is set, else nothing;
- ``"admin"`` (Workers API, admin routes): ``ControlPlaneAuth`` with JWT and the
  control-plane keys when ``--control-plane-api-keys`` or ``--jwt-issuer`` +
  ``--jwt-audience`` are set; else (SMG's fall-backs) with the shared ``--api-key``
  alone; else, when only tenant keys exist, refusing everyone; else nothing
  (``AuditOnly`` with ``--control-plane-audit-enabled``);
- ``"public"`` (health, readiness, ``/v1/models``, server info): nothing.

A route whose stage is nothing pays nothing per request. Malformed settings raise
``ConfigError`` here, at start-up; ``start()`` (on the running loop) fetches the IdP's
signing keys in the background, ``stop()`` cancels that. ``rekeying(config)`` rotates the
tenant and control-plane keys in place (a configuration reload).
"""
from __future__ import annotations

import asyncio
import time

from smg.errors import ConfigError

from smg.auth.audit import Audit
from smg.auth.filters import AuditOnly, ControlPlaneAuth, DataPlaneAuth
from smg.auth.jwt import JwtSettings, JwtValidator, fetch_json
from smg.auth.keys import (KeyTable, control_plane_table, data_plane_table, parse_control_plane_keys,
                           parse_tenant_keys, shared_key_table)
from smg.auth.principal import Principal

# control-plane modes
CONTROL_AUTH = "control_plane"   # JWT and/or control-plane keys
CONTROL_SHARED_KEY = "shared_key"  # fall-back: the shared --api-key
CONTROL_CLOSED = "closed"        # fall-back: tenant keys only, nobody gets in
CONTROL_OPEN = "open"

__all__ = ["Auth", "Principal", "CONTROL_AUTH", "CONTROL_SHARED_KEY", "CONTROL_CLOSED", "CONTROL_OPEN"]


class Auth:
    def __init__(self, config, reply, clock=time.monotonic, fetch=fetch_json) -> None:
        """``reply``: the pipeline's Reply class (status, message, code, headers);
        ``fetch``: ``async fetch(url) -> JSON`` for OIDC discovery and the JWKS.

        Raises:
            ConfigError: a malformed key entry, role mapping, JWT URL, or JWT settings
                without both issuer and audience.
        """
        self._reply, self._clock, self._fetch = reply, clock, fetch
        tenants = parse_tenant_keys(config.tenant_api_key)
        control_keys = parse_control_plane_keys(config.control_plane_api_keys)
        self.jwt_settings = JwtSettings.from_config(config)
        data_keys = data_plane_table(config.api_key, tenants)
        self.shared_key = bool(config.api_key)
        self.tenant_keys = len(tenants)
        self.control_keys = len(control_keys)
        self.audit = Audit() if config.control_plane_audit_enabled else None
        self.data = DataPlaneAuth(data_keys, reply) if len(data_keys) else None
        self.jwt = None
        self._warm: asyncio.Future | None = None
        self.control: ControlPlaneAuth | AuditOnly | None
        if control_keys or self.jwt_settings is not None:
            self.control_mode = CONTROL_AUTH
            if self.jwt_settings is not None:
                self.jwt = JwtValidator(self.jwt_settings, clock, fetch)
            self.control = ControlPlaneAuth(control_plane_table(control_keys), self.jwt, self.audit, reply)
        elif config.api_key:
            self.control_mode = CONTROL_SHARED_KEY
            self.control = ControlPlaneAuth(shared_key_table(config.api_key), None, self.audit, reply)
        elif tenants:
            self.control_mode = CONTROL_CLOSED
            self.control = ControlPlaneAuth(KeyTable(), None, self.audit, reply)
        else:
            self.control_mode = CONTROL_OPEN
            self.control = AuditOnly(self.audit) if self.audit is not None else None

    def rekeying(self, config):
        """New tenant and control-plane keys (a configuration reload), checked in full
        now; returns the function that puts them in place, after which the filters
        already in the routes' chains verify against them.

        Raises:
            ConfigError: a malformed entry, or keys that would add or remove a stage
                (none before and some now, or the reverse: the chains were built for
                the old ones; a restart changes that).
        """
        new = Auth(config, self._reply, self._clock, self._fetch)
        if (new.data is None) != (self.data is None):
            raise ConfigError("--tenant-api-key", "data-plane keys cannot be turned on or off at run time "
                                                  "(restart smg-proxy)")
        if new.control_mode != self.control_mode:
            raise ConfigError("--control-plane-api-keys", "control-plane keys cannot be turned on or off at "
                                                          "run time (restart smg-proxy)")

        def apply() -> None:
            if self.data is not None:
                self.data.use(new.data.keys)
            if isinstance(self.control, ControlPlaneAuth):
                self.control.keys = new.control.keys
            self.tenant_keys, self.control_keys = new.tenant_keys, new.control_keys
        return apply

    def start(self) -> None:
        """On the running loop: fetch the IdP's signing keys in the background."""
        if self.jwt is not None and self._warm is None:
            self._warm = asyncio.ensure_future(self.jwt.prefetch())

    def stop(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
            self._warm = None

    def stage(self, endpoint):
        """The auth filter ``endpoint`` runs first, or None."""
        access = endpoint.access
        if access == "data":
            return self.data
        if access == "admin":
            return self.control
        return None
