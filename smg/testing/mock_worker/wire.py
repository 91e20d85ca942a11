"""The mock's HTTP/1.1 response framing, on ``smg.http1.writer``.

Rules:
- Status lines, whole Content-Length responses, chunks, the last chunk and the 100
  Continue line all come from ``smg.http1.writer``; nothing here re-implements them.
- What the writer has no call for, and this module adds: a head left *open* (status
  line and header lines, no blank line yet). Answers are rendered once into templates
  whose head is open, so each request appends its own header lines (``x-request-id``,
  ``connection: close``) and the blank line, and the whole answer leaves in one write.
- Header names are lower-case bytes; values are bytes the caller has freed of CR/LF.
"""
from __future__ import annotations

from smg.http1.writer import status_line


def header_line(name: bytes, value: bytes) -> bytes:
    """One ``name: value`` header line with its CRLF."""
    return name + b": " + value + b"\r\n"


def open_head(status: int, headers: list) -> bytes:
    """The status line and ``headers`` ((bytes, bytes) pairs), without the ending blank line."""
    return status_line(status) + b"".join([header_line(n, v) for n, v in headers])


END_OF_HEAD = b"\r\n"
CONNECTION_CLOSE = header_line(b"connection", b"close")
