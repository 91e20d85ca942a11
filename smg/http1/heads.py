"""Selector for the header-line builders: native (smg._native.heads) or pure Python
(heads_py).

Exports ``header_lines`` / ``allowed_lines`` (the ones to use), ``header_linesPy`` /
``allowed_linesPy`` (always available) and ``header_linesC`` / ``allowed_linesC`` (None
when the extension is not built or SMG_NO_EXTENSIONS is set), and the verdict codes
``DROP``, ``FORWARD``, ``CONNECTION``. With SMG_REQUIRE_EXTENSIONS=1 a missing extension
is an ImportError, not a silent fallback (see smg._native.load). API and rules:
heads_py's docstring.
"""

from __future__ import annotations

from smg._native import load
from smg.http1.heads_py import CONNECTION, DROP, FORWARD
from smg.http1.heads_py import allowed_lines as allowed_linesPy
from smg.http1.heads_py import header_lines as header_linesPy

_m = load("heads")
header_linesC = _m.header_lines if _m else None
header_lines = header_linesC or header_linesPy
allowed_linesC = _m.allowed_lines if _m else None
allowed_lines = allowed_linesC or allowed_linesPy

__all__ = ["CONNECTION", "DROP", "FORWARD", "allowed_lines", "allowed_linesC", "allowed_linesPy",
           "header_lines", "header_linesC", "header_linesPy"]
