"""Control-plane audit lines (``--control-plane-audit-enabled``): one INFO line on the
``smg.audit`` logger per control-plane request authenticated, denied or refused.

The line is SMG's event: message ``control_plane_audit`` and the fields principal,
auth_method, role, method, path, resource (the id in ``/workers/{id}``), outcome
(``success`` | ``denied``), request_id, details; ``key=value`` pairs after the
message (values with spaces, quotes or ``=`` are JSON-quoted).

Rules:
- Never a credential: the fields are the principal's id and role, never a token or
  key, and not the request's headers or body.
- Every value is sanitized against log injection as SMG does: newlines, tabs,
  backslashes and control characters escaped, and cut at ``MAX_FIELD`` characters.
- Only control-plane routes are audited; with auditing off there is no audit object
  at all (the filters test for None).
"""
from __future__ import annotations

import logging

import orjson

from smg.auth.principal import USER, VIA_NONE

MAX_FIELD = 1024  # SMG's limit: a flood of one huge field cannot fill the log
SUCCESS = "success"
DENIED = "denied"

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def sanitize(s: str) -> str:
    out = []
    for ch in s[:MAX_FIELD]:
        e = _ESCAPES.get(ch)
        if e is not None:
            out.append(e)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    if len(s) > MAX_FIELD:
        out.append("...[TRUNCATED]")
    return "".join(out)


def _value(v: str) -> str:
    if v and not any(c in v for c in ' "='):
        return v
    return orjson.dumps(v).decode()


class Audit:
    __slots__ = ("log",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("smg.audit")

    def event(self, ctx, outcome: str, principal=None, details: str | None = None) -> None:
        """One audit line for the request of ``ctx``."""
        ep = ctx.endpoint
        path = ctx.path.decode("latin-1")
        resource = None
        if ep.is_prefix:
            resource = path[len(ep.key):] or None
        fields: list[tuple[str, str | None]]
        if principal is None:
            fields = [("principal", "unauthenticated"), ("auth_method", VIA_NONE), ("role", USER)]
        else:
            fields = [("principal", principal.id), ("auth_method", principal.via), ("role", principal.role)]
        fields += [("method", ctx.method.decode("latin-1")), ("path", path), ("resource", resource),
                   ("outcome", outcome), ("request_id", ctx.rid.decode("latin-1") or None), ("details", details)]
        line = " ".join(f"{k}={_value(sanitize(v))}" for k, v in fields if v is not None)
        self.log.info("control_plane_audit %s", line)
