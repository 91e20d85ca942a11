"""Kubernetes label selectors (``--selector k=v ...``): the query string and the
client-side check.

Rules:
1. Pure.
2. ``selector_string`` accepts a list of requirements, a ``{k: v}`` dict or one
   comma-separated string, and gives the ``labelSelector`` query value; commas inside
   parentheses (``env in (a,b)``) do not split.
3. Equality-based requirements (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``) are also
   checked client-side; set-based ones (``in``/``notin``) are left to the API server.
"""
from __future__ import annotations


def selector_string(selector) -> str:
    """``["app=sglang", "role=worker"]``, ``{"app": "sglang"}`` or ``"app=sglang,role=worker"``
    -> the ``labelSelector`` query value."""
    if not selector:
        return ""
    if isinstance(selector, dict):
        return ",".join(f"{k}={v}" for k, v in selector.items())
    if isinstance(selector, str):
        selector = [selector]
    parts = []
    for item in selector:
        parts.extend(_split_top(item))
    return ",".join(parts)


def _split_top(s: str) -> list:
    """Splits a selector on the commas outside parentheses (``env in (a,b)`` stays whole)."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [p for p in out if p]


def _parse_requirement(req: str) -> tuple:
    if "!=" in req:
        k, v = req.split("!=", 1)
        return ("!=", k.strip(), v.strip())
    if "==" in req:
        k, v = req.split("==", 1)
        return ("=", k.strip(), v.strip())
    if "=" in req:
        k, v = req.split("=", 1)
        return ("=", k.strip(), v.strip())
    if req.startswith("!"):
        return ("!", req[1:].strip(), None)
    return ("exists", req.strip(), None)


def parse_selector(selector) -> list:
    """Equality-based label selector -> requirements ``[(op, key, value)]``.
    Set-based (``in``/``notin``) requirements are skipped.

    Raises:
        ValueError: an empty key.
    """
    out = []
    for req in _split_top(selector_string(selector)):
        if " in " in req or " notin " in req or "(" in req:
            continue
        op, k, v = _parse_requirement(req)
        if not k:
            raise ValueError(f"bad label selector requirement {req!r}")
        out.append((op, k, v))
    return out


def match_selector(labels: dict | None, requirements: list) -> bool:
    """True when ``labels`` meet every requirement of ``parse_selector``."""
    labels = labels or {}
    for op, k, v in requirements:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True
