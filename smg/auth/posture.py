"""The start-up security posture line: what each class of route demands, and which
routes are open to anyone who reaches the port (SMG 1.13 prints a "SECURITY POSTURE"
warning listing the exposed routes when no key is configured).

Rules:
- Pure: from the ``Auth`` plan (smg/auth/__init__.py) and the endpoint table to
  ``(exposed, text)``; ``exposed`` is True when any data-plane or control-plane route
  is open, and the text then starts with ``SECURITY POSTURE:`` and names them.
- Counts only, never a key.
"""
from __future__ import annotations

from smg.auth import CONTROL_AUTH, CONTROL_CLOSED, CONTROL_OPEN, CONTROL_SHARED_KEY


def _routes(endpoints, access: str) -> str:
    return ", ".join(f"{'/'.join(m for m in ep.methods if m != 'HEAD')} {ep.path}"
                     for ep in endpoints if ep.access == access)


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def describe(auth, endpoints, control_listener: str | None = None) -> tuple:
    """``(exposed, text)`` for the gateway's log and the CLI.

    ``control_listener``: ``host:port`` of a separate control-plane listener, if any.
    """
    parts = []
    open_data = auth.data is None
    if open_data:
        parts.append("data plane OPEN (no --api-key or --tenant-api-key): " + _routes(endpoints, "data"))
    else:
        keys = []
        if auth.shared_key:
            keys.append("the shared --api-key")
        if auth.tenant_keys:
            keys.append(_n(auth.tenant_keys, "tenant key"))
        parts.append("data plane: " + " + ".join(keys))
    mode = auth.control_mode
    where = f" on {control_listener}" if control_listener else ""
    if mode == CONTROL_OPEN:
        parts.append(f"control plane{where} OPEN (no --control-plane-api-keys, --jwt-issuer/--jwt-audience or "
                     "--api-key; anyone can register and remove workers): " + _routes(endpoints, "admin"))
    elif mode == CONTROL_AUTH:
        how = []
        if auth.jwt_settings is not None:
            how.append(f"JWT (issuer {auth.jwt_settings.issuer})")
        if auth.control_keys:
            how.append(_n(auth.control_keys, "control-plane key"))
        parts.append(f"control plane{where}: " + " + ".join(how) + ", admin role required")
    elif mode == CONTROL_SHARED_KEY:
        parts.append(f"control plane{where}: the shared --api-key (no control-plane auth configured)")
    elif mode == CONTROL_CLOSED:
        parts.append(f"control plane{where}: CLOSED to everyone (only tenant keys are configured; set "
                     "--control-plane-api-keys or --api-key to manage workers)")
    if auth.audit is not None:
        parts.append("control-plane audit on")
    exposed = open_data or mode == CONTROL_OPEN
    public = ", ".join(ep.path for ep in endpoints if ep.access == "public")
    parts.append("public: " + public)
    return exposed, ("SECURITY POSTURE: " if exposed else "security posture: ") + "; ".join(parts)
