"""Serializing HTTP/1.1 heads and bodies (bytes out; no I/O).

Heads are built as one ``bytes`` so that a whole small response leaves in one write.
"""
from __future__ import annotations

from http import HTTPStatus

from smg.http1.heads import header_lines

_STATUS_LINES: dict = {}
for _s in HTTPStatus:
    _STATUS_LINES[int(_s)] = b"HTTP/1.1 %d %s\r\n" % (int(_s), _s.phrase.encode())

# Hop-by-hop header names (RFC 9110 §7.6.1) plus the framing headers the gateway
# recomputes for each hop; none of them is forwarded as received.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"content-length", b"host", b"expect",
})

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """Returns the status line (with CRLF) for ``status``."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = b"Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def connection_tokens(headers: list) -> frozenset:
    """Header names a ``Connection`` header nominates as hop-by-hop (RFC 9110 §7.6.1)."""
    names = set()
    for n, v in headers:
        if n == b"connection":
            for tok in v.split(b","):
                tok = tok.strip().lower()
                if tok:
                    names.add(tok)
    return frozenset(names)


def forward_headers(parts: list, headers: list, skip: frozenset) -> None:
    """Appends ``name: value`` lines of the end-to-end ``headers`` to ``parts``.

    ``skip`` must contain HOP_BY_HOP. Names a Connection header nominates (other than
    the framing words ``close``/``keep-alive``) are dropped too, wherever that header
    stands: when one is met, the lines already appended are rebuilt with the full set
    (the rare path; the common one is a single pass, smg.http1.heads.header_lines, which
    appends all the lines as one bytes).
    """
    lines = header_lines(headers, skip)
    if lines is not None:
        if lines:
            parts.append(lines)
        return
    start = len(parts)
    for n, v in headers:
        if n in skip:
            if n == b"connection" and v.lower() not in (b"close", b"keep-alive"):
                nominated = connection_tokens(headers)
                if not nominated <= skip:
                    del parts[start:]
                    full = skip | nominated
                    for n2, v2 in headers:
                        if n2 not in full:
                            parts.append(b"%s: %s\r\n" % (n2, v2))
                    return
            continue
        parts.append(b"%s: %s\r\n" % (n, v))


def response(status: int, headers: list, body: bytes, keep_alive: bool = True) -> bytes:
    """A complete response with a Content-Length body; ``headers`` are (bytes, bytes) pairs."""
    parts = [status_line(status)]
    for n, v in headers:
        parts.append(n + b": " + v + b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)
