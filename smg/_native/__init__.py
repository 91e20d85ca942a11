"""Native (Cython) modules and the switch that selects them.

Rules:
- Nothing outside the selector modules (smg/http1/parser.py, smg/streaming/sse.py,
  smg/routing/radix.py, ...) imports from smg._native directly.
- SMG_NO_EXTENSIONS=1 forces every selector to its pure-Python twin.
- SMG_REQUIRE_EXTENSIONS=1 turns a failed native import into an error instead of a
  silent fallback (a broken build must never ship slow without anyone noticing).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = bool(os.environ.get("SMG_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = os.environ.get("SMG_REQUIRE_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    raise ImportError("SMG_NO_EXTENSIONS and SMG_REQUIRE_EXTENSIONS are both set; pick one")


def load(name: str) -> ModuleType | None:
    """Import smg._native.<name>.

    Returns:
        the compiled module, or None when extensions are disabled or not built.
    Raises:
        ImportError: the module failed to import and SMG_REQUIRE_EXTENSIONS is set.
    """
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(f"smg._native.{name}")
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        return None
