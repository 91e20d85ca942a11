"""Forwarding: which of a client's request headers reach a worker, and which request id.

By default a worker sees only the allow-list ``SMG_FORWARDED`` of client headers
(``authorization``, ``x-request-id`` and every ``x-request-id-*``, ``x-correlation-id``,
``traceparent``, ``tracestate``, ``x-smg-routing-key``, ``anthropic-version``,
``anthropic-beta``), plus what the gateway writes itself: Host (the worker's
address), Content-Type ``application/json`` and Content-Length on requests with a
body. Cookies, ``x-api-key``, ``x-forwarded-for``, ``openai-*``, other ``x-smg-*`` and
custom headers stay at the gateway: a worker is not told more about the client than
it needs to serve the request.

Wider: ``--forward-headers NAME...`` adds names (``NAME*``: every name starting with
``NAME``); ``--forward-all-headers`` forwards every end-to-end header (hop-by-hop ones,
RFC 9110 §7.6.1, still dropped, and the client's Content-Type passed as it came).

Request id upstream (``--upstream-request-id``): ``client`` forwards the client's
``x-request-id`` when it sent one (replaced by the gateway's id when it was invalid,
e.g. over 128 characters) and nothing otherwise; ``uuid4`` sends a fresh UUID4
when the client sent none (for engines that refuse a non-UUID request id with 400).
The gateway's own id (logs, traces, the ``x-request-id`` response header) is not
changed by either.

Rules kept for whatever the mode:
- A worker's API key replaces the client's Authorization; a credential the gateway
  consumed (one of its own keys) never reaches a worker; with tracing on, the
  gateway's span context replaces the client's ``traceparent``/``tracestate``
  (smg/upstream/http1_leg.py applies these).
- The decision is made once per header *name* and cached (``verdict``, bounded), so a
  request costs one dict lookup per header; header names come lower-cased from the
  parsers.
"""
from __future__ import annotations

from smg.errors import ConfigError
from smg.http1 import writer
from smg.http1.heads_py import CONNECTION, DROP, FORWARD  # the verdict codes (heads reads them)

#: Client request headers forwarded by default (SMG's allow-list, checked against
#: SMG 1.13 with a header-recording worker).
SMG_FORWARDED = frozenset({
    b"authorization", b"x-request-id", b"x-correlation-id", b"traceparent", b"tracestate",
    b"x-smg-routing-key", b"anthropic-version", b"anthropic-beta",
})
SMG_FORWARDED_PREFIXES = (b"x-request-id-",)

# what the gateway writes itself; forwarding them as received would duplicate or lie
_GATEWAY_SET = writer.HOP_BY_HOP | {b"content-type"}

_VERDICT_MAX = 1024   # distinct header names whose verdict is cached (clients choose names)

REQUEST_ID_MODES = ("client", "uuid4")


class Forwarding:
    """The forwarding decision of one gateway, fixed at start-up.

    ``verdict`` maps a header name to DROP, FORWARD or CONNECTION (the Connection
    header, whose nominated names must go too); ``classify`` fills it.
    """

    __slots__ = ("forward_all", "names", "prefixes", "mint_request_id", "verdict")

    def __init__(self, extra: tuple = (), forward_all: bool = False, request_id: str = "client") -> None:
        if request_id not in REQUEST_ID_MODES:
            raise ConfigError("--upstream-request-id", f"must be one of {', '.join(REQUEST_ID_MODES)}")
        names = set(SMG_FORWARDED)
        prefixes = list(SMG_FORWARDED_PREFIXES)
        for raw in extra:
            name = raw.strip().lower()
            star = name.endswith("*")
            token = name[:-1] if star else name
            if not token or not all(c.isalnum() or c in "!#$%&'+-.^_`|~" for c in token) or not token.isascii():
                raise ConfigError("--forward-headers", f"{raw!r} is not a header name (or a NAME* prefix)")
            b = token.encode()
            if not star and b in _GATEWAY_SET:
                raise ConfigError("--forward-headers", f"{raw!r} is set by the gateway for each hop, "
                                                       "never forwarded")
            (prefixes.append if star else names.add)(b)
        self.forward_all = forward_all
        self.names = frozenset(names)
        self.prefixes = tuple(prefixes)
        self.mint_request_id = request_id == "uuid4"
        self.verdict: dict = {}

    @classmethod
    def from_config(cls, config) -> Forwarding:
        return cls(tuple(config.forward_headers), config.forward_all_headers, config.upstream_request_id)

    def classify(self, name: bytes) -> int:
        """The verdict on header ``name`` (lower-case), cached."""
        if name == b"connection":
            v = CONNECTION
        elif name in _GATEWAY_SET:
            v = DROP
        elif self.forward_all or name in self.names or name.startswith(self.prefixes):
            v = FORWARD
        else:
            v = DROP
        if len(self.verdict) < _VERDICT_MAX:
            self.verdict[name] = v
        return v

    def describe(self) -> str:
        """One line for start-up logs."""
        if self.forward_all:
            return "all end-to-end request headers"
        extra = sorted(n.decode() for n in self.names - SMG_FORWARDED) + \
            [p.decode() + "*" for p in self.prefixes[len(SMG_FORWARDED_PREFIXES):]]
        return "SMG's allow-list" + (f" + {', '.join(extra)}" if extra else "")


#: The default (SMG's behaviour), for callers built without settings (tests, tools).
DEFAULT = Forwarding()
