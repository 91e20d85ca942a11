"""CORS: which browser origins may call the gateway (``--cors-allowed-origins``), and
the headers that say so. Sans-I/O: request headers in, answer headers out; the sink
(smg/server/protocol.py) adds them.

SMG puts CORS outermost (before request ids, metrics, auth and routing), so a
preflight is answered by the gateway whatever its path and whatever methods the route
takes.

Rules:
- Off unless origins are configured: no CORS header is added and OPTIONS is answered
  like any method a route does not take (405). (SMG, given no origins, allows any
  origin; smg makes the operator say so, with ``--cors-allowed-origins '*'``.)
- An origin is ``scheme://host[:port]`` as browsers serialize it (RFC 6454 §6.2):
  configured entries are lowercased, a default port (80 for http, 443 for https) is
  dropped, and anything with a path, query, user or fragment is refused at start-up, as
  is ``null`` (what sandboxed documents and local files send: allowing it allows
  anyone). A request's ``Origin`` is compared exactly, then lowercased.
- ``*`` allows every origin and is answered ``Access-Control-Allow-Origin: *`` (the
  answer then does not depend on the origin, so no ``Vary``).
- A preflight is ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``.
  From an allowed origin it is answered 200 with an empty body: the origin,
  ``Access-Control-Allow-Methods`` (SMG's GET, POST, PATCH, DELETE, OPTIONS, plus PUT,
  which ``/workers/{id}`` takes), ``Access-Control-Allow-Headers`` echoing the requested
  ones (every header a client sends is forwarded to the worker, and ``*`` would not
  cover ``Authorization``), ``Access-Control-Max-Age: 3600`` (SMG's), and ``Vary`` on the
  three request headers the answer depends on. From any other origin it is answered
  403 in the API's error format (``cors_origin_not_allowed``), with no CORS header.
- Every other answer to an allowed origin carries the origin and
  ``Access-Control-Expose-Headers: x-request-id, retry-after`` (SMG exposes
  x-request-id); with a list of origins every answer carries ``Vary: Origin``, so that
  a cache never hands one origin's answer to another.
- ``Access-Control-Allow-Credentials`` is never sent: the gateway authenticates with
  keys a script sets (``Authorization``), never with cookies (SMG sends none either), and
  with ``*`` the Fetch standard forbids it anyway.
- A worker's own ``access-control-*`` headers are dropped from relayed answers: the
  gateway is the one policy (two ``Access-Control-Allow-Origin`` values make a browser
  refuse the answer).
- The per-request work is a scan of the request headers for ``Origin`` and a dict
  lookup; every answer header list is built once, at start-up.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from smg.errors import ConfigError

ACAO = b"access-control-allow-origin"
_EXPOSE = (b"access-control-expose-headers", b"x-request-id, retry-after")
_VARY_ORIGIN = (b"vary", b"origin")
METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE = b"3600"  # seconds, SMG's

# Response headers of a worker that never pass when the gateway answers for CORS.
WORKER_CORS_HEADERS = frozenset({
    ACAO, b"access-control-allow-credentials", b"access-control-allow-methods",
    b"access-control-allow-headers", b"access-control-expose-headers", b"access-control-max-age",
    b"access-control-allow-private-network",
})

# Access-Control-Request-Headers is a comma-separated list of header names (tokens,
# RFC 9110 §5.6.2); anything else is not echoed.
_HEADER_LIST = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FLAG = "--cors-allowed-origins"

REFUSED = object()  # preflight(): a preflight from an origin that is not allowed


def normalize_origin(entry: str) -> str:
    """``entry`` as a browser would send it in ``Origin``.

    Raises:
        ValueError: not ``*`` and not a ``scheme://host[:port]`` origin.
    """
    if entry == "*":
        return entry
    if not entry.isascii():
        raise ValueError(f"{entry!r} is not an origin: write an international name in its ASCII (punycode) form")
    if entry.lower() == "null":
        raise ValueError("'null' is the origin of sandboxed documents and local files; allowing it allows anyone")
    try:
        parts = urlsplit(entry.rstrip("/"))
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} is not an origin (scheme://host[:port])") from None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment \
            or parts.username is not None or "%" in entry or " " in entry:
        raise ValueError(f"{entry!r} is not an origin (scheme://host[:port], no path)")
    scheme = parts.scheme.lower()
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class CorsPolicy:
    """The configured origins and the answer headers for each, built once."""

    __slots__ = ("any", "origins", "_answers", "_plain", "_skips")

    def __init__(self, origins) -> None:
        """``origins``: entries as configured (normalized here).

        Raises:
            ValueError: an entry is not an origin (the message names it).
        """
        normalized = [normalize_origin(o) for o in origins]
        if not normalized:
            raise ValueError("no origins")
        self.any = "*" in normalized
        self.origins = tuple(dict.fromkeys(o for o in normalized if o != "*"))
        # per allowed origin (as bytes): the headers of every answer to it
        self._answers: dict = {} if self.any else {
            o.encode(): [(ACAO, o.encode()), _EXPOSE, _VARY_ORIGIN] for o in self.origins}
        # the headers of every other answer
        self._plain = [(ACAO, b"*"), _EXPOSE] if self.any else [_VARY_ORIGIN]
        self._skips: dict = {}

    @classmethod
    def from_config(cls, cfg) -> "CorsPolicy | None":
        """The policy of ``cfg.cors_allowed_origins``; None (CORS off) when it is empty.

        Raises:
            ConfigError: naming ``--cors-allowed-origins``.
        """
        if not cfg.cors_allowed_origins:
            return None
        try:
            return cls(cfg.cors_allowed_origins)
        except ValueError as e:
            raise ConfigError(_FLAG, str(e)) from None

    def _lookup(self, origin: bytes):
        hdrs = self._answers.get(origin)
        if hdrs is None:
            hdrs = self._answers.get(origin.lower())
        return hdrs

    def headers(self, request_headers: list) -> list:
        """The CORS headers of an answer to a request with ``request_headers`` (not to be
        modified by the caller)."""
        if self.any:
            return self._plain
        for n, v in request_headers:
            if n == b"origin":
                hdrs = self._lookup(v)
                return self._plain if hdrs is None else hdrs
        return self._plain

    def preflight(self, request_headers: list):
        """For an OPTIONS request: None when it is not a preflight (no ``Origin`` or no
        ``Access-Control-Request-Method``); ``REFUSED`` when its origin is not allowed;
        else the headers a 200 answer adds to those of ``headers()``."""
        origin = method = asked = None
        for n, v in request_headers:
            if n == b"origin":
                origin = v
            elif n == b"access-control-request-method":
                method = v
            elif n == b"access-control-request-headers":
                asked = v if asked is None else asked + b"," + v
        if origin is None or method is None:
            return None
        if not self.any and self._lookup(origin) is None:
            return REFUSED
        out = [(b"access-control-allow-methods", METHODS), (b"access-control-max-age", MAX_AGE),
               (b"vary", b"access-control-request-method, access-control-request-headers")]
        if asked is not None:
            asked = asked.strip()
            if asked and _HEADER_LIST.fullmatch(asked):
                out.append((b"access-control-allow-headers", asked.lower()))
        return out

    def skip(self, skip: frozenset) -> frozenset:
        """``skip`` (names a relayed head drops) with the workers' CORS headers added."""
        s = self._skips.get(skip)
        if s is None:
            s = skip | WORKER_CORS_HEADERS
            if len(self._skips) < 16:  # callers pass a few constant sets; never grow without bound
                self._skips[skip] = s
        return s
