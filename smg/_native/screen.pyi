"""Type stub for smg._native.screen (the pure-Python twin smg.api.validate.screen_py
has the same API; its module docstring states what a screen vouches for and the spec
format). mypy's stubtest checks the twin and the compiled module against this stub
(tests/test_stubs.py)."""

from typing import final

__all__ = ["CROSS", "DOUBT", "VALID", "F32_MAX", "Screen",
           "T_ANY", "T_STR", "T_BOOL", "T_INT", "T_NUM", "T_MAP", "T_STRS", "T_LIST", "T_MAPOF", "T_OBJ", "T_TEXT",
           "T_DOUBT", "R_NONE", "R_INT", "R_DEC", "R_NONEMPTY", "R_ITEMS", "R_STOP", "R_TOPK", "R_DOUBT"]

DOUBT: int  # the full validator must judge the body
VALID: int  # field types and field rules hold; no cross-field rule applies
CROSS: int  # field types and field rules hold; run the cross-field rules
F32_MAX: float

T_ANY: int
T_STR: int
T_BOOL: int
T_INT: int
T_NUM: int
T_MAP: int
T_STRS: int
T_LIST: int
T_MAPOF: int
T_OBJ: int
T_TEXT: int
T_DOUBT: int
R_NONE: int
R_INT: int
R_DEC: int
R_NONEMPTY: int
R_ITEMS: int
R_STOP: int
R_TOPK: int
R_DOUBT: int

@final  # a cdef class marked @cython.final: not a base class
class Screen:
    """One API's screen over parsed request bodies."""

    def __init__(self, fields: dict, required: tuple, rules: dict, cross_fields: frozenset | None) -> None:
        """``fields``: name -> type spec; ``required``: names; ``rules``: name -> rule
        spec (each for a field of ``fields``); ``cross_fields``: the names the
        cross-field rules read (None: those rules always run).

        Raises:
            ValueError: a malformed spec.
        """
    def passes(self, body: dict) -> int:
        """``VALID``, ``CROSS`` or ``DOUBT`` for a parsed body."""
