"""Header lines of proxied heads (pure-Python twin of smg._native.heads).

Both functions turn a list of ``(name, value)`` pairs (names lower-case, as the parsers
give them) into the ``name: value\\r\\n`` lines a head carries, concatenated into one
``bytes``; the caller adds the status or request line, the gateway's own headers and the
final CRLF.

- ``header_lines(headers, skip)``: the lines of the pairs whose name is not in ``skip``
  (which holds smg.http1.writer.HOP_BY_HOP); None when a ``connection`` header in ``skip``
  carries a value other than ``close`` / ``keep-alive`` (any case): it may nominate
  end-to-end names as hop-by-hop, and the caller takes its slow path
  (smg.http1.writer.forward_headers).
- ``allowed_lines(headers, verdict, classify, replaced, rid)``: the lines the default
  forwarding mode sends upstream (smg/upstream/http1_leg.py ``request_head``): a pair goes
  when its verdict (``verdict[name]``, else ``classify(name)``, which caches it) is
  FORWARD and its name is not in ``replaced`` (a frozenset, or None); only the first
  ``x-request-id`` goes, with ``rid`` as its value when ``rid`` is not None. Returns
  ``(lines, has_rid)`` (has_rid: an ``x-request-id`` line is in ``lines``), or None when a
  CONNECTION-verdict header nominates names (a value other than close / keep-alive): the
  caller then runs its full loop.

The verdict codes DROP, FORWARD, CONNECTION are defined here (0, 1, 2) and used by
smg.upstream.forwarding, which writes the verdicts.
The compiled twin gives the same results (same bytes, same None, same exceptions for
malformed input such as ``str`` values, which raise TypeError).
"""
from __future__ import annotations

__all__ = ["CONNECTION", "DROP", "FORWARD", "allowed_lines", "header_lines"]

DROP, FORWARD, CONNECTION = 0, 1, 2

_FRAMING = (b"close", b"keep-alive")
_RID = b"x-request-id"


def header_lines(headers: list, skip: frozenset) -> bytes | None:
    """The ``name: value`` lines of ``headers`` whose name is not in ``skip``, or None
    (a ``connection`` header nominates names; see the module docstring)."""
    out: list = []
    add = out.extend
    for n, v in headers:
        if n in skip:
            if n == b"connection" and v.lower() not in _FRAMING:
                return None
            continue
        add((n, b": ", v, b"\r\n"))
    return b"".join(out)


def allowed_lines(headers: list, verdict: dict, classify, replaced: frozenset | None,
                  rid: bytes | None) -> tuple[bytes, bool] | None:
    """``(lines, has_rid)`` of the headers the default forwarding mode sends, or None (a
    CONNECTION-verdict header nominates names; see the module docstring)."""
    out: list = []
    add = out.extend
    has_rid = False
    for n, v in headers:
        k = verdict.get(n)
        if k is None:
            k = classify(n)
        if k == FORWARD:
            if replaced is not None and n in replaced:
                continue
            if n == _RID:
                if has_rid:
                    continue
                has_rid = True
                if rid is not None:
                    v = rid
            add((n, b": ", v, b"\r\n"))
        elif k == CONNECTION and v.lower() not in _FRAMING:
            return None
    return b"".join(out), has_rid
