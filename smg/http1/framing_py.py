"""What a batch of leg events becomes on the client's wire (pure-Python twin of
smg._native.framing).

- ``collect(events, out, parts)``: the body bytes of a batch of upstream-leg events
  (smg.http1.events). Each ``Data`` event's payload is appended to the list ``out``,
  and to the list ``parts`` too unless it is None (a non-streamed body kept for its
  usage); the batch is read up to its first ``EndOfMessage``, and events of other
  types are passed over. Returns ``(bytes, ended)``: the payload bytes appended and
  whether an ``EndOfMessage`` was met.
- ``chunked(head, pieces, end)``: one write of a chunked HTTP/1.1 body: ``head`` (the
  pending response head, or None), then each non-empty piece of ``pieces`` as one
  chunk (hex length, CRLF, bytes, CRLF), then the last chunk ``0\\r\\n\\r\\n`` when
  ``end``. An empty piece is skipped: written as a chunk it would end the body.

Rules both twins keep: same results and same exceptions for the same input; the
compiled one takes exact ``list``/``bytes`` input itself and hands anything else
(bytearray or memoryview pieces, a tuple of events, a ``parts`` that is not a list)
to this module.
"""
from __future__ import annotations

from smg.http1.events import Data, EndOfMessage
from smg.http1.writer import LAST_CHUNK

__all__ = ["chunked", "collect"]


def collect(events, out: list, parts: list | None) -> tuple[int, bool]:
    """``(bytes, ended)`` after appending the batch's payloads to ``out`` (and ``parts``)."""
    n = 0
    for ev in events:
        t = type(ev)
        if t is Data:
            d = ev.data
            n += len(d)
            if parts is not None:
                parts.append(d)
            out.append(d)
        elif t is EndOfMessage:
            return n, True
    return n, False


def chunked(head: bytes | None, pieces, end: bool) -> bytes:
    """``head`` and ``pieces`` framed as chunks (the last chunk too when ``end``), joined."""
    out = [] if head is None else [head]
    for d in pieces:
        n = len(d)
        if n:
            out.append(b"%x\r\n" % n)
            out.append(d)
            out.append(b"\r\n")
    if end:
        out.append(LAST_CHUNK)
    return b"".join(out)
