"""Selector for the cache_aware radix trees: native (smg._native.radix) or pure Python
(radix_py).

Exports ``StringTree`` / ``TokenTree`` (the ones to use), ``StringTreePy`` /
``TokenTreePy`` (always available) and ``StringTreeC`` / ``TokenTreeC`` (None when the
extension is not built or SMG_NO_EXTENSIONS is set). With SMG_REQUIRE_EXTENSIONS=1 a
missing extension is an ImportError, not a silent fallback (see smg._native.load).
Semantics (size definition, logical clock, eviction order, memory accounting and its
``NODE_BYTES`` / ``SLOT_BYTES``): radix_py's docstring.
"""

from __future__ import annotations

from smg._native import load
from smg.routing.radix_py import MAX_KEY_UNITS, NODE_BYTES, SLOT_BYTES
from smg.routing.radix_py import StringTree as StringTreePy
from smg.routing.radix_py import TokenTree as TokenTreePy

_m = load("radix")
StringTreeC = _m.StringTree if _m else None
TokenTreeC = _m.TokenTree if _m else None
StringTree = StringTreeC or StringTreePy
TokenTree = TokenTreeC or TokenTreePy

__all__ = [
    "MAX_KEY_UNITS",
    "NODE_BYTES",
    "SLOT_BYTES",
    "StringTree",
    "StringTreeC",
    "StringTreePy",
    "TokenTree",
    "TokenTreeC",
    "TokenTreePy",
]
