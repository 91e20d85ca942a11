"""Tool formats written as Python literals: pythonic (Llama 4 and others) and sarashina.

- **pythonic**: a list of calls with keyword arguments, ``[f(a=1, b="x"), g()]``, anywhere in
  the text; ``<|python_start|>`` / ``<|python_end|>`` are removed from content.  Argument values
  are Python literals (strings, numbers, ``True``/``False``/``None``, lists, tuples, dicts).
- **sarashina**: a list of dicts ``[{'name': 'f', 'arguments': {...}}]`` after the optional
  ``<|tool_calls|>`` marker; without the marker the list must open the output.  The content
  is returned stripped of surrounding whitespace.

A frame is read once its brackets balance (quotes are honoured), then parsed with ``ast``;
its calls are emitted whole.  Anything that is not such a list is content.
"""
from __future__ import annotations

import ast

from ..partial_json import dumps
from ._scan import skip_ws
from ._values import NotLiteral, literal_to_json
from .base import CallState, FramedToolParser, Frame

_OPEN = {"[": "]", "(": ")", "{": "}"}
_CLOSE = frozenset(")]}")
# A frame deeper than this is not a tool call; stops pathological nesting early.
MAX_NESTING = 64


class _BracketFrame(Frame):
    """Waits for the bracketed value starting at ``self.pos`` to close, then :meth:`_parse`."""

    __slots__ = ("_stack", "_quote", "_esc", "_scan_at", "_open_at")

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self._stack: list[str] = []
        self._quote = ""
        self._esc = False
        self._scan_at = -1
        self._open_at = -1

    def _first(self, buf: str, p: int) -> bool | None:
        """Checks the first character of the value (True ok, None more, False malformed)."""
        return True

    def advance(self, buf: str, final: bool) -> None:
        if self._scan_at < 0:
            p = skip_ws(buf, self.pos)
            if p >= len(buf):
                return
            if buf[p] not in _OPEN:
                self.fail(self.start)
                return
            self._open_at = p
            self._scan_at = p
        ok = self._first(buf, self._open_at)
        if ok is None:
            return
        if ok is False:
            self.fail(self.start)
            return
        i, n = self._scan_at, len(buf)
        stack, quote, esc = self._stack, self._quote, self._esc
        while i < n:
            c = buf[i]
            i += 1
            if quote:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == quote:
                    quote = ""
                continue
            if c == "'" or c == '"':
                quote = c
            elif c in _OPEN:
                stack.append(_OPEN[c])
                if len(stack) > MAX_NESTING:
                    self.fail(self.start)
                    return
            elif c in _CLOSE:
                if not stack or stack.pop() != c:
                    self.fail(self.start)
                    return
                if not stack:
                    self._scan_at = i
                    self._parse(buf[self._open_at:i])
                    if self.fail_at is None:
                        self.end = i
                    return
        self._scan_at, self._quote, self._esc = i, quote, esc

    def _parse(self, src: str) -> None:
        raise NotImplementedError


class _PythonicFrame(_BracketFrame):
    __slots__ = ()

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self.pos = start  # the marker "[" is the list itself

    def _first(self, buf, p):
        q = skip_ws(buf, p + 1)
        if q >= len(buf):
            return None
        return buf[q].isalpha() or buf[q] == "_"

    def _parse(self, src: str) -> None:
        try:
            tree = ast.parse(src, mode="eval").body
            if not isinstance(tree, ast.List) or not tree.elts:
                raise NotLiteral("not a list of calls")
            calls = []
            for node in tree.elts:
                if not isinstance(node, ast.Call) or node.args:
                    raise NotLiteral("not a keyword call")
                func = node.func
                if isinstance(func, ast.Name):
                    name = func.id
                elif isinstance(func, ast.Attribute):
                    name = func.attr
                else:
                    raise NotLiteral("callee")
                args = {}
                for kw in node.keywords:
                    if kw.arg is None:
                        raise NotLiteral("**kwargs")
                    if kw.arg not in args:
                        args[kw.arg] = literal_to_json(kw.value)
                calls.append((name, dumps(args)))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.fail(self.start)
            return
        for name, args_json in calls:
            c = CallState(name, [args_json])
            c.closed = True
            self.calls.append(c)


class PythonicToolParser(FramedToolParser):
    """``[f(a=1), g(b="x")]``."""

    name = "pythonic"
    STARTS = ("[",)
    STRIP = ("<|python_start|>", "<|python_end|>")
    KEEP_TEXT_AFTER = True
    ALL_OR_NOTHING = False
    FRAME = _PythonicFrame


_SARASHINA_MARKER = "<|tool_calls|>"


class _SarashinaFrame(_BracketFrame):
    __slots__ = ()

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        if marker != _SARASHINA_MARKER:
            self.pos = start

    def _parse(self, src: str) -> None:
        try:
            value = literal_to_json(ast.parse(src, mode="eval").body)
            items = value if isinstance(value, list) else [value]
            calls = []
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    continue
                calls.append((item["name"], dumps(item.get("arguments", {}))))
            if not calls:
                raise NotLiteral("no calls")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.fail(self.start)
            return
        for name, args_json in calls:
            c = CallState(name, [args_json])
            c.closed = True
            self.calls.append(c)


class SarashinaToolParser(FramedToolParser):
    """``<|tool_calls|>[{'name': …, 'arguments': {…}}]``, or the bare list opening the output."""

    name = "sarashina"
    STARTS = (_SARASHINA_MARKER, "[")
    KEEP_TEXT_AFTER = True
    ALL_OR_NOTHING = False
    FRAME = _SarashinaFrame
    TRIM_CONTENT = True

    def accept_start(self, marker: str) -> bool:
        return marker == _SARASHINA_MARKER or not self._content_seen


__all__ = ["PythonicToolParser", "SarashinaToolParser"]
