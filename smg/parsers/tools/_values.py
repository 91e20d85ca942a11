"""Turning untyped parameter text into JSON values (schema coercion, Python literals).

Formats that write each parameter as bare text (XML-style ``<parameter=k>v</parameter>``,
GLM's ``<arg_value>``, MiniMax, Step-3) give the value's type only through the request's
tool schema.  :func:`coerce` applies it:

- ``string``: the text, trimmed;
- ``integer`` / ``number``: the JSON number when the text is one, else the text;
- ``boolean``: ``true``/``false`` in any case, else the text;
- ``object`` / ``array``: the JSON value when the text parses as that type, else the text;
- ``null``: ``null`` for "null", else the text;
- no schema (unknown tool or key): any JSON value the text parses as (and Python's
  ``True``/``False``/``None``), else the text; formats that say so keep objects and arrays
  as text.

Pythonic formats write Python literals; :func:`literal_to_json` converts an ``ast`` node of
literals (str, number, bool, None, list, tuple, dict) and refuses anything else.
"""
from __future__ import annotations

import ast
import json
import math

from ..partial_json import dumps, loads

_PY_LITERALS = {"True": True, "False": False, "None": None}


def _loads(text: str):
    try:
        return True, loads(text)
    except ValueError:
        return False, None


def coerce(raw: str, typ: str | None, structured: bool = True) -> object:
    """Returns the JSON value of one parameter's text under its schema type.

    ``structured`` False keeps untyped objects and arrays as text.
    """
    v = raw.strip()
    if typ == "string":
        return v
    if typ in ("integer", "number"):
        ok, val = _loads(v)
        if ok and isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val):
            return val
        return v
    if typ == "boolean":
        low = v.lower()
        if low in ("true", "false"):
            return low == "true"
        return v
    if typ in ("object", "array"):
        ok, val = _loads(v)
        if ok and isinstance(val, dict if typ == "object" else list):
            return val
        return v
    if typ == "null":
        return None if v == "null" else v
    ok, val = _loads(v)
    if ok and not (isinstance(val, float) and not math.isfinite(val)):
        if structured or not isinstance(val, (dict, list)):
            return val
        return v
    if v in _PY_LITERALS:
        return _PY_LITERALS[v]
    return v


def coerce_json(raw: str, typ: str | None) -> str:
    """:func:`coerce`, serialised canonically."""
    return dumps(coerce(raw, typ))


class NotLiteral(ValueError):
    """An expression that is not a plain Python literal."""


def literal_to_json(node: ast.AST) -> object:
    """Converts an ``ast`` literal expression into a JSON value.  Raises: NotLiteral."""
    if isinstance(node, ast.Constant):
        v = node.value
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, float)) and math.isfinite(v):
            return v
        raise NotLiteral(repr(v))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = literal_to_json(node.operand)
        if isinstance(inner, bool) or not isinstance(inner, (int, float)):
            raise NotLiteral("sign on a non-number")
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal_to_json(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, val in zip(node.keys, node.values):
            if k is None:
                raise NotLiteral("dict unpacking")
            key = literal_to_json(k)
            if not isinstance(key, str):
                key = json.dumps(key)
            out[key] = literal_to_json(val)
        return out
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[node.id]
    raise NotLiteral(type(node).__name__)
