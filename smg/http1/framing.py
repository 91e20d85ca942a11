"""Selector for the body framing of relayed answers: native (smg._native.framing) or
pure Python (framing_py).

Exports ``collect`` / ``chunked`` (the ones to use), ``collectPy`` / ``chunkedPy``
(always available) and ``collectC`` / ``chunkedC`` (None when the extension is not built
or SMG_NO_EXTENSIONS is set). With SMG_REQUIRE_EXTENSIONS=1 a missing extension is an
ImportError, not a silent fallback (see smg._native.load). API and rules: framing_py's
docstring.
"""

from __future__ import annotations

from smg._native import load
from smg.http1.framing_py import chunked as chunkedPy
from smg.http1.framing_py import collect as collectPy

_m = load("framing")
collectC = _m.collect if _m else None
collect = collectC or collectPy
chunkedC = _m.chunked if _m else None
chunked = chunkedC or chunkedPy

__all__ = ["chunked", "chunkedC", "chunkedPy", "collect", "collectC", "collectPy"]
