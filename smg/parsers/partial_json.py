"""Incremental JSON reader for streamed tool-call arguments.

A model streams the arguments of a tool call as JSON text, a few characters at a time.
:class:`JsonStream` reads that text once, left to right, and writes the *canonical* form
of what it has read so far: compact (no whitespace), keys in the order written, strings
re-escaped, numbers normalised.  The complete-mode parsers serialise with :func:`dumps`,
which produces the same canonical text, so the deltas a stream emits concatenate to the
complete-mode arguments.

Rules this module keeps:

- **Prefix stability.**  Text is written only once it can no longer change: a string's
  characters as they arrive (an escape only when complete), a number or literal only when the
  character after it arrives.  Everything written is therefore a prefix of the canonical
  form of the finished value.
- **Strict JSON.**  The first character that cannot continue a JSON value stops the reader
  with :attr:`JsonStream.error_at` set to its index; nothing is guessed or repaired.
- **Linear time, bounded memory.**  Each character is looked at once (runs of plain string
  characters are copied with one regex match); the state is a stack as deep as the value.
- **No I/O, no exceptions** out of :meth:`JsonStream.feed` for any input.

Canonical numbers follow a 64-bit JSON reader: integers that fit in 64 bits stay integers
(``-0`` becomes ``-0.0``), everything else becomes a binary64 float printed in shortest
round-trip form — plain decimal for decimal exponents -5..15, else ``1e+16`` / ``1.5e-7``;
out-of-range numbers (``1e400``) are an error.

Besides the raw reader, :class:`JsonStream` can *capture* tool calls: objects at a given
depth are calls, their ``name`` string and their arguments value (under one of the
``args_keys``) are collected separately, which is what the JSON-based tool formats need.
"""
from __future__ import annotations

import json
import math
import re

__all__ = ["JsonStream", "dumps", "loads", "canonical_number", "loads_partial"]

_WS = frozenset(" \t\n\r")
_STR_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_NUM_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUM_CHARS = frozenset("0123456789+-.eE")
_SIMPLE_ESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1

# Canonical escapes of single characters inside a string (json.dumps rules, ensure_ascii off).
_ESCAPE_OUT = {c: json.dumps(c, ensure_ascii=False)[1:-1] for c in map(chr, range(0x20))}
_ESCAPE_OUT['"'] = '\\"'
_ESCAPE_OUT["\\"] = "\\\\"

# Reader states.
_S_VALUE = 0  # expecting a value
_S_KEY_OR_END = 1  # after "{": a key or "}"
_S_KEY = 2  # after "," in an object: a key
_S_COLON = 3  # after a key
_S_AFTER = 4  # after a value inside a container: "," or the closer
_S_STRING = 5  # inside a string
_S_NUMBER = 6  # inside a number
_S_LITERAL = 7  # inside true/false/null
_S_VALUE_OR_END = 8  # after "[": a value or "]"
_S_DONE = 9
_S_ERROR = 10


def canonical_number(text: str) -> str | None:
    """Returns the canonical form of a JSON number literal, or None when it is out of range.

    Raises: nothing (the caller passes text that matched the JSON number grammar).
    """
    m = _NUM_RE.fullmatch(text)
    if m is None:
        return None
    if m.group(1) is None and m.group(2) is None:
        v = int(text)
        if v == 0 and text[0] == "-":
            return "-0.0"  # a 64-bit reader keeps the sign of zero as a float
        if _I64_MIN <= v <= _U64_MAX:
            return str(v)
    f = float(text)
    if math.isinf(f):
        return None
    return _float_text(f)


def _float_text(f: float) -> str:
    """Shortest round-trip text of a float, laid out as a 64-bit JSON writer does: plain
    decimal (with ``.0`` when whole) for decimal exponents -5..15, else ``d.ddde+N`` /
    ``d.ddde-N``."""
    r = repr(f)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mant, _, exp = r.partition("e")
    k = int(exp) if exp else 0
    intpart, _, frac = mant.partition(".")
    digits = (intpart + frac).lstrip("0")
    if not digits:
        return sign + "0.0"
    # decimal exponent of the first significant digit
    lead_zeros = len(intpart + frac) - len((intpart + frac).lstrip("0"))
    k += len(intpart) - 1 - lead_zeros
    digits = digits.rstrip("0") or "0"
    if -5 <= k < 16:
        if k >= 0:
            whole = digits[: k + 1].ljust(k + 1, "0")
            rest = digits[k + 1:] or "0"
            return f"{sign}{whole}.{rest}"
        return f"{sign}0.{'0' * (-k - 1)}{digits}"
    m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{m}e{'+' if k > 0 else '-'}{abs(k)}"


def _parse_int(text: str) -> int | float:
    v = int(text)
    return -0.0 if v == 0 and text[0] == "-" else v


def loads(text: str) -> object:
    """``json.loads`` reading numbers as a 64-bit reader does (``-0`` is the float -0.0), so
    that :func:`dumps` writes back the canonical text.  Raises: ValueError."""
    return json.loads(text, parse_int=_parse_int)


def dumps(value: object, *, spaced: bool = False) -> str:
    """Serialises a JSON value in the canonical compact form :class:`JsonStream` writes
    (``spaced``: with ``", "`` and ``": "`` between items, numbers and strings unchanged).

    Returns: the JSON text.  Raises: ValueError for values JSON cannot hold (NaN, ±inf).
    """
    parts: list[str] = []
    _dump(value, parts, (", ", ": ") if spaced else (",", ":"))
    return "".join(parts)


def _dump(v: object, out: list[str], seps: tuple[str, str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif isinstance(v, int):
        if _I64_MIN <= v <= _U64_MAX:
            out.append(str(v))
        else:
            out.append(_float_text(float(v)))
    elif isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError("JSON cannot hold NaN or infinity")
        out.append(_float_text(v))
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k, item in v.items():
            if not first:
                out.append(seps[0])
            first = False
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(seps[1])
            _dump(item, out, seps)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(seps[0])
            _dump(item, out, seps)
        out.append("]")
    else:
        raise ValueError(f"not a JSON value: {type(v).__name__}")


class JsonStream:
    """Reads one JSON value incrementally and writes its canonical text.

    ``feed(text, start)`` reads ``text[start:]``; the caller passes the whole text seen so far
    each time (it keeps growing) and the reader resumes where it stopped.  After each call:

    - :attr:`out` holds the canonical text written so far (a list of pieces);
    - :attr:`end` is the index just past the value once it is complete (else None);
    - :attr:`error_at` is the index of the first character that is not valid JSON (else None).

    With ``call_keys`` set, objects at depth :attr:`call_depth` (1 when the value is an object,
    2 when it is an array of objects) are treated as tool calls: :attr:`calls` lists, per call
    object, ``[name, args_pieces, args_seen, closed]`` — the value of its ``name_key`` string
    (once complete), the canonical text of the first of ``args_keys`` found, and whether that
    object has closed.  The canonical text of the rest of the value is then not kept.
    """

    __slots__ = (
        "out", "end", "error_at", "calls", "call_depth", "_pos", "_state", "_stack", "_tok",
        "_esc", "_is_key", "_key", "_name_key", "_args_keys", "_capture", "_cap_depth",
        "_key_depth", "_capture_name", "_keep_out", "_want_calls", "_high",
    )

    def __init__(self, *, name_key: str = "name", args_keys: tuple[str, ...] | None = None) -> None:
        self.out: list[str] = []
        self.end: int | None = None
        self.error_at: int | None = None
        self.calls: list[list] = []
        self.call_depth = 0
        self._pos: int | None = None  # index to resume at; None before the first feed
        self._state = _S_VALUE
        self._stack: list[str] = []  # "{" / "["
        self._tok: list[str] = []  # number/literal characters, or the current key / name
        self._esc = ""  # pending escape text inside a string
        self._high = 0  # pending high surrogate
        self._is_key = False
        self._key = ""  # last complete key at each depth is not needed; only the current one
        self._name_key = name_key
        self._args_keys = args_keys
        self._want_calls = args_keys is not None
        self._keep_out = not self._want_calls
        self._capture: list[str] | None = None  # where canonical text goes right now
        self._cap_depth = -1  # depth at which the captured args value started
        self._key_depth = 0
        self._capture_name = False

    # -- helpers -------------------------------------------------------------------------

    def _emit(self, s: str) -> None:
        if self._capture is not None:
            self._capture.append(s)
        elif self._keep_out:
            self.out.append(s)

    def _fail(self, i: int) -> int:
        self.error_at = i
        self._state = _S_ERROR
        return i

    def _value_done(self, i: int) -> None:
        """A value (scalar or container) ended just before index i."""
        depth = len(self._stack)
        if self._capture is not None and depth == self._cap_depth:
            self._capture = None
            self._cap_depth = -1
        if depth == 0:
            self._state = _S_DONE
            self.end = i
        else:
            self._state = _S_AFTER

    def _begin_value(self) -> None:
        """Called before a value starts at the current depth (after a key or in an array)."""
        if not self._want_calls:
            return
        depth = len(self._stack)
        if depth == self.call_depth and depth and self._stack[-1] == "{" and self._capture is None:
            key = self._key
            call = self.calls[-1]
            if key in self._args_keys and not call[2]:
                call[2] = True
                self._capture = call[1]
                self._cap_depth = depth

    def text(self) -> str:
        return "".join(self.out)

    # -- the reader ----------------------------------------------------------------------

    def feed(self, text: str, start: int = 0) -> None:
        """Reads text from the resume point (or ``start`` on the first call).

        Raises: nothing; malformed input sets :attr:`error_at`.
        """
        if self._pos is None:
            self._pos = start
        i = self._pos
        n = len(text)
        state = self._state
        while i < n and state < _S_DONE:
            c = text[i]
            if state == _S_STRING:
                if self._esc:
                    self._esc += c
                    i += 1
                    if not self._escape_step(i - 1):
                        return self._stop(i - 1, fail=True)
                    continue
                m = _STR_RUN.match(text, i)
                if m is not None:
                    chunk = m.group()
                    if self._high:
                        return self._stop(i, fail=True)
                    if self._is_key or self._capture_name:
                        self._tok.append(chunk)
                    self._emit(chunk)
                    i = m.end()
                    continue
                if c == '"':
                    if self._high:
                        return self._stop(i, fail=True)
                    i += 1
                    self._emit('"')
                    if self._is_key:
                        self._key = "".join(self._tok)
                        self._tok.clear()
                        self._state = state = _S_COLON
                    else:
                        if self._capture_name:
                            call = self.calls[-1]
                            if call[0] is None:
                                call[0] = "".join(self._tok)
                            self._tok.clear()
                            self._capture_name = False
                        self._value_done(i)
                        state = self._state
                    continue
                if c == "\\":
                    self._esc = "\\"
                    i += 1
                    continue
                return self._stop(i, fail=True)  # raw control character
            if c in _WS and state != _S_NUMBER and state != _S_LITERAL:
                i += 1
                continue
            if state == _S_NUMBER:
                if c in _NUM_CHARS:
                    self._tok.append(c)
                    i += 1
                    continue
                num = canonical_number("".join(self._tok))
                if num is None:
                    return self._stop(i, fail=True)
                self._tok.clear()
                self._emit(num)
                self._value_done(i)
                state = self._state
                continue  # re-read c in the new state
            if state == _S_LITERAL:
                want = self._tok[0]
                got = len(self._tok) - 1
                if got < len(want):
                    if c != want[got]:
                        return self._stop(i, fail=True)
                    self._tok.append(c)
                    i += 1
                    if got + 1 == len(want):
                        self._tok.clear()
                        self._emit(want)
                        self._value_done(i)
                        state = self._state
                    continue
            if state == _S_VALUE or state == _S_VALUE_OR_END:
                if state == _S_VALUE_OR_END and c == "]":
                    self._stack.pop()
                    self._emit("]")
                    i += 1
                    self._value_done(i)
                    state = self._state
                    continue
                self._begin_value()
                if c == "{":
                    self._stack.append("{")
                    depth = len(self._stack)
                    if self._want_calls:
                        if depth == 1 and not self.call_depth:
                            self.call_depth = 1
                        if depth == self.call_depth and self._capture is None:
                            self.calls.append([None, [], False, False])
                    self._emit("{")
                    self._state = state = _S_KEY_OR_END
                    i += 1
                    continue
                if c == "[":
                    self._stack.append("[")
                    if self._want_calls and len(self._stack) == 1 and not self.call_depth:
                        self.call_depth = 2
                    self._emit("[")
                    self._state = state = _S_VALUE_OR_END
                    i += 1
                    continue
                if c == '"':
                    self._is_key = False
                    depth = len(self._stack)
                    self._capture_name = (
                        self._want_calls and depth == self.call_depth and self._capture is None
                        and self._key == self._name_key and self._stack[-1] == "{"
                    )
                    self._emit('"')
                    self._state = state = _S_STRING
                    i += 1
                    continue
                if c == "-" or "0" <= c <= "9":
                    self._tok.append(c)
                    self._state = state = _S_NUMBER
                    i += 1
                    continue
                lit = _LITERALS.get(c)
                if lit is not None:
                    self._tok[:] = [lit, c]
                    self._state = state = _S_LITERAL
                    i += 1
                    continue
                return self._stop(i, fail=True)
            if state == _S_KEY_OR_END or state == _S_KEY:
                if c == "}" and state == _S_KEY_OR_END:
                    self._close_object()
                    i += 1
                    self._value_done(i)
                    state = self._state
                    continue
                if c == '"':
                    self._is_key = True
                    self._tok.clear()
                    self._emit('"')
                    self._state = state = _S_STRING
                    i += 1
                    continue
                return self._stop(i, fail=True)
            if state == _S_COLON:
                if c != ":":
                    return self._stop(i, fail=True)
                self._emit(":")
                self._state = state = _S_VALUE
                i += 1
                continue
            if state == _S_AFTER:
                top = self._stack[-1]
                if c == ",":
                    self._emit(",")
                    self._state = state = _S_KEY if top == "{" else _S_VALUE
                    i += 1
                    continue
                if c == "}" and top == "{":
                    self._close_object()
                    i += 1
                    self._value_done(i)
                    state = self._state
                    continue
                if c == "]" and top == "[":
                    self._stack.pop()
                    self._emit("]")
                    i += 1
                    self._value_done(i)
                    state = self._state
                    continue
                return self._stop(i, fail=True)
            return self._stop(i, fail=True)  # pragma: no cover - every state handled above
        self._pos = i
        self._state = state

    def _close_object(self) -> None:
        depth = len(self._stack)
        self._stack.pop()
        self._emit("}")
        if self._want_calls and depth == self.call_depth and self._capture is None and self.calls:
            self.calls[-1][3] = True

    def _stop(self, i: int, *, fail: bool) -> None:
        self._pos = i
        if fail:
            self._fail(i)

    def finish_number(self, at: int) -> None:
        """Ends a top-level number at end of input (a number needs a following character)."""
        if self._state == _S_NUMBER and not self._stack:
            num = canonical_number("".join(self._tok))
            if num is None:
                self._fail(at)
                return
            self._tok.clear()
            self._emit(num)
            self._state = _S_DONE
            self.end = at

    def _escape_step(self, i: int) -> bool:
        """Advances a pending escape; returns False when it is invalid."""
        esc = self._esc
        if len(esc) == 2:
            c = esc[1]
            if c == "u":
                return True
            ch = _SIMPLE_ESC.get(c)
            if ch is None or self._high:
                return False
            self._esc = ""
            self._string_char(ch)
            return True
        if len(esc) < 6:
            return esc[-1] in _HEX
        cp = int(esc[2:6], 16)
        self._esc = ""
        if self._high:
            if not 0xDC00 <= cp <= 0xDFFF:
                return False
            cp = 0x10000 + ((self._high - 0xD800) << 10) + (cp - 0xDC00)
            self._high = 0
        elif 0xD800 <= cp <= 0xDBFF:
            self._high = cp
            return True
        elif 0xDC00 <= cp <= 0xDFFF:
            return False
        self._string_char(chr(cp))
        return True

    def _string_char(self, ch: str) -> None:
        if self._is_key or self._capture_name:
            self._tok.append(ch)
        self._emit(_ESCAPE_OUT.get(ch, ch))

    @property
    def done(self) -> bool:
        return self._state == _S_DONE

    @property
    def failed(self) -> bool:
        return self._state == _S_ERROR


def loads_partial(text: str) -> object:
    """Parses a possibly truncated JSON text into the value read so far.

    Open containers are closed, an unterminated string keeps what it has, and an incomplete
    key, number or literal at the end is left out.  Returns: the value, or None when nothing
    complete was read.  Raises: ValueError when the text is not a prefix of valid JSON.
    """
    r = JsonStream()
    r.feed(text)
    if r.failed:
        raise ValueError(f"invalid JSON at index {r.error_at}")
    if r.done:
        return json.loads(r.text())
    r.finish_number(len(text))
    if r.done:
        return json.loads(r.text())
    partial = r.text()
    if not partial:
        return None
    return json.loads(_close_partial(partial, r))


def _close_partial(partial: str, r: JsonStream) -> str:
    s = partial
    if r._state == _S_STRING:
        if r._is_key:
            # drop the incomplete key, and a preceding comma
            s = s[: s.rfind('"')]
        else:
            s += '"'
    s = s.rstrip()
    if s.endswith(":"):
        s = s[: s.rfind('"', 0, s.rfind('"'))]
    if s.endswith(","):
        s = s[:-1]
    closers = {"{": "}", "[": "]"}
    return s + "".join(closers[c] for c in reversed(r._stack))
