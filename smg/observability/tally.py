"""Selector for the per-shape tallies: native (smg._native.tally) or pure Python (tally_py).

Exports ``Tally``, ``Hist`` and ``AccessBuffer`` (the ones to use) and their ``...Py``
(always available) and ``...C`` (None when the extension is not built or
SMG_NO_EXTENSIONS is set) variants; see smg._native.load for SMG_REQUIRE_EXTENSIONS.
"""

from __future__ import annotations

from smg._native import load
from smg.observability.tally_py import AccessBuffer as AccessBufferPy
from smg.observability.tally_py import Hist as HistPy
from smg.observability.tally_py import Tally as TallyPy

_m = load("tally")
TallyC = _m.Tally if _m else None
HistC = _m.Hist if _m else None
AccessBufferC = _m.AccessBuffer if _m else None
Tally = TallyC or TallyPy
Hist = HistC or HistPy
AccessBuffer = AccessBufferC or AccessBufferPy

__all__ = ["AccessBuffer", "AccessBufferC", "AccessBufferPy", "Hist", "HistC", "HistPy", "Tally", "TallyC",
           "TallyPy"]
