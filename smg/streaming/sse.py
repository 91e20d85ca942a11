"""Selector for the SSE scanner and the stream-end watcher: native (smg._native.sse) or
pure Python (sse_py).

Exports ``SSEScanner`` (the one to use), ``SSEScannerPy`` (always available) and
``SSEScannerC`` (None when the extension is not built or SMG_NO_EXTENSIONS is set); the
same three for ``StreamEnd`` and ``usage_counts``.
With SMG_REQUIRE_EXTENSIONS=1 a missing extension is an ImportError, not a silent
fallback (see smg._native.load).
"""

from __future__ import annotations

from smg._native import load
from smg.streaming.sse_py import DEFAULT_MAX_EVENT_SIZE
from smg.streaming.sse_py import SSEScanner as SSEScannerPy
from smg.streaming.sse_py import StreamEnd as StreamEndPy
from smg.streaming.sse_py import usage_counts as usage_countsPy

_m = load("sse")
SSEScannerC = _m.SSEScanner if _m else None
SSEScanner = SSEScannerC or SSEScannerPy
StreamEndC = _m.StreamEnd if _m else None
StreamEnd = StreamEndC or StreamEndPy
usage_countsC = _m.usage_counts if _m else None
usage_counts = usage_countsC or usage_countsPy

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEScanner", "SSEScannerC", "SSEScannerPy", "StreamEnd", "StreamEndC",
           "StreamEndPy", "usage_counts", "usage_countsC", "usage_countsPy"]
