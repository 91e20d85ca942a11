"""Selector for the body screen: native (smg._native.screen) or pure Python (screen_py).

Exports ``Screen`` (the one to use), ``ScreenPy`` (always available) and ``ScreenC``
(None when the extension is not built or SMG_NO_EXTENSIONS is set), and the spec codes.
With SMG_REQUIRE_EXTENSIONS=1 a missing extension is an ImportError (smg._native.load).
"""
from __future__ import annotations

from smg._native import load
from smg.api.validate.screen_py import (CROSS, DOUBT, R_DEC, R_DOUBT, R_INT, R_ITEMS, R_NONE, R_NONEMPTY, R_STOP,
                                        R_TOPK, T_ANY, T_BOOL, T_DOUBT, T_INT, T_LIST, T_MAP, T_MAPOF, T_NUM, T_OBJ,
                                        T_STR, T_STRS, T_TEXT, VALID)
from smg.api.validate.screen_py import Screen as ScreenPy

_m = load("screen")
ScreenC = _m.Screen if _m else None
Screen = ScreenC or ScreenPy

__all__ = ["Screen", "ScreenC", "ScreenPy", "CROSS", "DOUBT", "VALID", "T_ANY", "T_STR", "T_BOOL", "T_INT", "T_NUM",
           "T_MAP", "T_STRS", "T_LIST", "T_MAPOF", "T_OBJ", "T_TEXT", "T_DOUBT", "R_NONE", "R_INT", "R_DEC",
           "R_NONEMPTY", "R_ITEMS", "R_STOP", "R_TOPK", "R_DOUBT"]
