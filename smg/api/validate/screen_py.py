"""The body screen, pure Python: the twin of ``smg._native.screen`` (stub
``smg/_native/screen.pyi``; selector ``smg/api/validate/screen.py``).

A screen answers one question about a parsed request body, fast: can it vouch that the
validator (smg/api/validate/_core.py ``Shape``) would accept it? ``passes(body)``
returns ``VALID`` (every field type and field rule holds, no cross-field rule
applies), ``CROSS`` (the same, but a field the cross-field rules read is present: run
them) or ``DOUBT`` (anything else: the full validator judges the body and words the
fault). The validator's answers are never the screen's: a screen only spares the full
walk for bodies it can prove valid.

Rules:
- Sound, not complete: ``VALID``/``CROSS`` only for a body the full validator passes
  (through its field rules); any shape the screen does not model is ``DOUBT``.
  tests/native/test_screen.py checks both twins against the validators.
- The screen is built from plain specs (below), never from the validator's functions,
  so this module and the native one depend on nothing in smg.
- The valid path allocates nothing.

Specs:
- A *type spec* is ``(code, nullable, x, y)``; ``null`` passes when ``nullable``:

  ======== ==================================================================
  T_ANY    any value
  T_STR    a string
  T_BOOL   a boolean (never a number)
  T_INT    an integer (never a boolean) with ``x <= v <= y``
  T_NUM    an integer or a float
  T_MAP    an object, inside not judged
  T_STRS   a string or an array of strings
  T_LIST   an array whose items pass type spec ``x``
  T_MAPOF  an object whose values pass type spec ``x``
  T_OBJ    an object whose members named in ``x`` (name -> type spec) pass, with
           the names in ``y`` (a tuple) present
  T_TEXT   an array of messages each exactly ``{"role": r, "content": s}`` with
           ``r`` in the frozenset ``x`` and ``s`` a string (non-empty when ``y``)
  T_DOUBT  no value but null (when nullable) is vouched for
  ======== ==================================================================
- A *rule spec* is ``(code, x, y, z)``, applied to a non-null value that passed its
  type spec: R_NONE; R_INT ``x <= v <= y`` (None: unbounded); R_DEC the same for a
  decimal, ``x`` excluded when ``z``, a float beyond a 32-bit float's range refused;
  R_NONEMPTY a non-empty string or array; R_ITEMS a non-empty array (a string passes);
  R_STOP at most 4 stop sequences, none empty; R_TOPK -1 or at least 1; R_DOUBT nothing.
"""
from __future__ import annotations

__all__ = ["CROSS", "DOUBT", "VALID", "F32_MAX", "Screen",
           "T_ANY", "T_STR", "T_BOOL", "T_INT", "T_NUM", "T_MAP", "T_STRS", "T_LIST", "T_MAPOF", "T_OBJ", "T_TEXT",
           "T_DOUBT", "R_NONE", "R_INT", "R_DEC", "R_NONEMPTY", "R_ITEMS", "R_STOP", "R_TOPK", "R_DOUBT"]

DOUBT, VALID, CROSS = 0, 1, 2

T_ANY, T_STR, T_BOOL, T_INT, T_NUM, T_MAP, T_STRS, T_LIST, T_MAPOF, T_OBJ, T_TEXT, T_DOUBT = range(12)
R_NONE, R_INT, R_DEC, R_NONEMPTY, R_ITEMS, R_STOP, R_TOPK, R_DOUBT = range(8)

F32_MAX = 3.4028234663852886e38  # beyond it a 32-bit float is infinite


def _check_type(t, where: str) -> None:
    """Refuse a malformed type spec (at construction, never per request)."""
    if type(t) is not tuple or len(t) != 4 or type(t[0]) is not int or not T_ANY <= t[0] <= T_DOUBT:
        raise ValueError(f"{where}: not a type spec: {t!r}")
    code, _, x, y = t
    if code == T_INT and not (type(x) is int and type(y) is int and x <= y):
        raise ValueError(f"{where}: T_INT needs integer bounds x <= y")
    if code in (T_LIST, T_MAPOF):
        _check_type(x, where + "[]")
    elif code == T_OBJ:
        if type(x) is not dict or type(y) is not tuple:
            raise ValueError(f"{where}: T_OBJ needs a dict of member specs and a tuple of required names")
        for k, s in x.items():
            _check_type(s, f"{where}.{k}")
    elif code == T_TEXT and type(x) is not frozenset:
        raise ValueError(f"{where}: T_TEXT needs a frozenset of roles")


def _check_rule(r, where: str) -> None:
    if type(r) is not tuple or len(r) != 4 or type(r[0]) is not int or not R_NONE <= r[0] <= R_DOUBT:
        raise ValueError(f"{where}: not a rule spec: {r!r}")
    code, x, y, _ = r
    if code == R_INT and any(b is not None and type(b) is not int for b in (x, y)):
        raise ValueError(f"{where}: R_INT bounds are integers or None")
    if code == R_DEC and any(b is not None and type(b) not in (int, float) for b in (x, y)):
        raise ValueError(f"{where}: R_DEC bounds are numbers or None")


def _value_ok(t: tuple, v) -> bool:
    if v is None:
        return t[1]
    code = t[0]
    if code == T_STR:
        return type(v) is str
    if code == T_BOOL:
        return type(v) is bool
    if code == T_INT:
        return type(v) is int and t[2] <= v <= t[3]
    if code == T_NUM:
        return type(v) is float or type(v) is int
    if code == T_ANY:
        return True
    if code == T_MAP:
        return type(v) is dict
    if code == T_STRS:
        if type(v) is str:
            return True
        if type(v) is not list:
            return False
        for s in v:
            if type(s) is not str:
                return False
        return True
    if code == T_LIST:
        if type(v) is not list:
            return False
        item = t[2]
        for x in v:
            if not _value_ok(item, x):
                return False
        return True
    if code == T_MAPOF:
        if type(v) is not dict:
            return False
        item = t[2]
        for x in v.values():
            if not _value_ok(item, x):
                return False
        return True
    if code == T_OBJ:
        if type(v) is not dict:
            return False
        members = t[2]
        for k, x in v.items():
            s = members.get(k)
            if s is not None and not _value_ok(s, x):
                return False
        for name in t[3]:
            if name not in v:
                return False
        return True
    if code == T_TEXT:
        if type(v) is not list:
            return False
        roles, nonempty = t[2], t[3]
        for m in v:
            if type(m) is not dict or len(m) != 2:
                return False
            c = m.get("content")
            r = m.get("role")
            if type(c) is not str or type(r) is not str or r not in roles or (nonempty and not c):
                return False
        return True
    return False  # T_DOUBT


def _rule_ok(r: tuple, v) -> bool:
    code = r[0]
    if code == R_NONE:
        return True
    if code == R_INT:
        return (r[1] is None or v >= r[1]) and (r[2] is None or v <= r[2])
    if code == R_DEC:
        if type(v) is float and not -F32_MAX <= v <= F32_MAX:
            return False
        lo, hi = r[1], r[2]
        if lo is not None and (v <= lo if r[3] else v < lo):
            return False
        return hi is None or v <= hi
    if code == R_NONEMPTY:
        return len(v) > 0
    if code == R_ITEMS:
        return type(v) is not list or len(v) > 0
    if code == R_STOP:
        if type(v) is str:
            return len(v) > 0
        if len(v) > 4:
            return False
        for s in v:
            if not s:
                return False
        return True
    if code == R_TOPK:
        return v == -1 or v >= 1
    return False  # R_DOUBT


_NO_RULE = (R_NONE, None, None, None)


class Screen:
    """One API's screen: ``fields`` (name -> type spec), ``required`` (names),
    ``rules`` (name -> rule spec, each naming a field of ``fields``) and
    ``cross_fields`` (names the cross-field rules read; None: they always run).

    Raises:
        ValueError: a malformed spec (at construction).
    """

    __slots__ = ("_fields", "_required", "_always")

    def __init__(self, fields: dict, required: tuple, rules: dict, cross_fields: frozenset | None) -> None:
        for k, t in fields.items():
            _check_type(t, k)
        for k, r in rules.items():
            if k not in fields:
                raise ValueError(f"{k}: a rule for a field with no type spec")
            _check_rule(r, k)
        if type(required) is not tuple:
            raise ValueError("required: a tuple of names")
        cross = cross_fields or frozenset()
        table = {k: (t, rules.get(k, _NO_RULE), k in cross) for k, t in fields.items()}
        for k in cross:
            table.setdefault(k, ((T_ANY, True, None, None), _NO_RULE, True))
        self._fields = table
        self._required = required
        self._always = cross_fields is None

    def passes(self, body: dict) -> int:
        """``VALID``, ``CROSS`` or ``DOUBT`` for a parsed body (a dict)."""
        get = self._fields.get
        cross = self._always
        for k, v in body.items():
            f = get(k)
            if f is None:
                continue
            t, r, c = f
            if c:
                cross = True
            if v is None:
                if not t[1]:
                    return DOUBT
                continue
            if not _value_ok(t, v) or not _rule_ok(r, v):
                return DOUBT
        for name in self._required:
            if name not in body:
                return DOUBT
        return CROSS if cross else VALID
