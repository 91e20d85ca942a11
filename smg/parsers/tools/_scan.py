"""Small scanning helpers shared by the frame readers (no state, no I/O).

Each helper looks at ``buf`` from index ``p`` and answers without guessing: a match, "need
more text" (None), or a mismatch (-1).  Frame readers use them so that their decisions depend
on the text alone, never on where a chunk happened to end.
"""
from __future__ import annotations

NEED_MORE = None
MISMATCH = -1

_WS = " \t\r\n"


def skip_ws(buf: str, p: int) -> int:
    n = len(buf)
    while p < n and buf[p] in _WS:
        p += 1
    return p


def expect(buf: str, p: int, literal: str, *, ws: bool = True) -> int | None:
    """Index after ``literal`` at ``p`` (after optional whitespace), None when the text so
    far is a proper prefix of it, or -1 when it cannot match."""
    if ws:
        p = skip_ws(buf, p)
    rest = len(buf) - p
    if rest >= len(literal):
        return p + len(literal) if buf.startswith(literal, p) else MISMATCH
    return NEED_MORE if literal.startswith(buf[p:]) else MISMATCH


def expect_any(buf: str, p: int, literals: tuple[str, ...], *, ws: bool = True):
    """Like :func:`expect` over several literals: ``(literal, end)``, None, or -1."""
    if ws:
        p = skip_ws(buf, p)
    waiting = False
    for lit in literals:
        r = expect(buf, p, lit, ws=False)
        if r is NEED_MORE:
            waiting = True
        elif r != MISMATCH:
            return lit, r
    return NEED_MORE if waiting else MISMATCH


def partial_suffix(s: str, marker: str) -> int:
    """Length of the longest suffix of ``s`` that is a proper prefix of ``marker``."""
    for k in range(min(len(marker) - 1, len(s)), 0, -1):
        if marker.startswith(s[-k:]):
            return k
    return 0


def attr(text: str, name: str) -> str | None:
    """Value of ``name="..."`` in a tag's attribute text, or None."""
    key = name + '="'
    i = text.find(key)
    while i > 0 and not text[i - 1].isspace():
        i = text.find(key, i + 1)
    if i < 0:
        return None
    j = text.find('"', i + len(key))
    if j < 0:
        return None
    return text[i + len(key):j]
