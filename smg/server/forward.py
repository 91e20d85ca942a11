"""Building the request head sent to a worker (bytes out; no I/O)."""
from __future__ import annotations

from smg.http1 import writer

_SKIP_REQUEST = writer.HOP_BY_HOP | {b"x-request-id"}
# with tracing on, the gateway's own span context replaces the client's
_SKIP_TRACED = _SKIP_REQUEST | {b"traceparent", b"tracestate"}


def upstream_head(method: bytes, target: bytes, worker, rid: bytes, headers: list,
                  body_len: int, trace: list | None = None) -> bytes:
    """The request head sent to ``worker``: end-to-end headers forwarded, hop-by-hop
    ones (RFC 9110 §7.6.1) dropped, Host/Content-Length/x-request-id set by us."""
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\nx-request-id: %s\r\n" % (method, target, worker.host_header, rid)]
    if trace:
        for n, v in trace:
            parts.append(b"%s: %s\r\n" % (n, v))
    if body_len or method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"content-length: %d\r\n" % body_len)
    if worker.api_key:
        parts.append(b"authorization: Bearer %s\r\n" % worker.api_key)
        skip = (_SKIP_TRACED if trace else _SKIP_REQUEST) | {b"authorization"}
    else:
        skip = _SKIP_TRACED if trace else _SKIP_REQUEST
    for n, v in headers:
        if n in skip:
            if n == b"connection" and v.lower() not in (b"close", b"keep-alive"):
                skip = skip | writer.connection_tokens(headers)
            continue
        parts.append(b"%s: %s\r\n" % (n, v))
    parts.append(b"\r\n")
    return b"".join(parts)
