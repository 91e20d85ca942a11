"""Parametrize a test over the pure-Python and native twins of a module.

The native leg is skipped (never failed) when the extension is not compiled; CI's
compiled leg sets SMG_REQUIRE_EXTENSIONS=1, which makes a missing extension an
import error instead, so that skip cannot hide a broken build.
"""
from __future__ import annotations

from typing import Any


def twin_params(py: Any, c: Any) -> list:
    """Returns pytest params ``[py, c]`` with ids "py" and "c"."""
    import pytest

    return [
        pytest.param(py, id="py"),
        pytest.param(c, id="c", marks=pytest.mark.skipif(c is None, reason="native extension not built")),
    ]
