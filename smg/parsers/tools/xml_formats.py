"""Tool formats that write each parameter in its own tag: qwen_xml (Qwen3-Coder / Qwen3.5),
glm45_moe / glm47_moe, minimax_m2, step3, deepseek32 / deepseek_v4 (DSML) and kimi_k3 (XTML).

Frame shapes (after the opening marker; whitespace between tags is ignored):

- **qwen_xml**: ``<function=NAME>`` ``<parameter=KEY>VALUE</parameter>``… ``</function>``
  ``</tool_call>``; one call per ``<tool_call>``.
- **glm45_moe / glm47_moe**: ``NAME`` ``<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>``…
  ``</tool_call>``; 4.5 puts newlines between the tags, 4.7 none; one call per frame.
- **minimax_m2**: ``<invoke name="NAME">`` ``<parameter name="KEY">VALUE</parameter>``…
  ``</invoke>``, repeated, then ``</minimax:tool_call>``.
- **step3**: ``<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="NAME">``
  ``<steptml:parameter name="KEY">VALUE</steptml:parameter>``… ``</steptml:invoke>``
  ``<｜tool_call_end｜>``, repeated, then ``<｜tool_calls_end｜>``.
- **deepseek32 / deepseek_v4**: ``<｜DSML｜invoke name="NAME">``
  ``<｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>``…
  ``</｜DSML｜invoke>``, repeated, then ``</｜DSML｜function_calls>`` (V3.2) or
  ``</｜DSML｜tool_calls>`` (V4).  ``string="true"`` values are taken as written, others as
  JSON (the text when it is not JSON).  Whitespace before the block is not content.
- **kimi_k3**: ``<|open|>call tool="NAME" index="N"<|sep|>``
  ``<|open|>argument key="KEY" type="T"<|sep|>VALUE<|close|>argument<|sep|>``…
  ``<|close|>call<|sep|>``, repeated, then ``<|close|>tools<|sep|>``; ``type="string"`` values
  are taken as written, others as JSON.  The ``response`` channel markers around the content
  are removed.

The value text of the first four is coerced by the request's tool schema
(:func:`smg.parsers.tools._values.coerce`); untyped MiniMax values become scalars only, and a
Step-3 invoke without parameters is not a call.  Arguments are emitted one complete parameter at a
time, as canonical JSON; a repeated key keeps its first value.
"""
from __future__ import annotations

from ..partial_json import dumps, loads
from ._scan import MISMATCH, NEED_MORE, attr, expect
from ._values import coerce
from .base import CallState, FramedToolParser, Frame


class _TagFrame(Frame):
    """Reads ``[CALL_OPEN header] (PARAM)* CALL_CLOSE…`` calls, one per frame or several
    up to SECTION_END.

    Phases: 0 before a call (or the section end), 1 in a call's parameters, 2+k before the
    k-th literal of CALL_CLOSE.
    """

    __slots__ = ("_phase", "_call", "_keys")

    SECTION_END: str | None = None  # None: the frame is one call, opened by the marker
    CALL_OPEN: str = ""  # literal opening a call ("" when the marker opens it)
    HEADER_ENDS: tuple[str, ...] = (">",)  # first of these ends the call header
    HEADER_END_CONSUMED = True
    PARAM_OPEN = ""
    PARAM_HEAD_END = ">"
    PARAM_VALUE_OPEN = ""  # literal between the parameter header and its value
    PARAM_CLOSE = ""
    CALL_CLOSE: tuple[str, ...] = ()
    REQUIRE_PARAMS = False  # a call without parameters is not a call
    SPACED = False  # arguments written with ", " / ": " between items
    STRUCTURED_UNTYPED = True  # untyped values may be JSON objects/arrays (else scalars only)

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self._phase = 0
        self._call: CallState | None = None
        self._keys: set[str] = set()

    # -- format hooks --------------------------------------------------------------------

    def _name(self, header: str) -> str | None:
        name = header.strip()
        return name or None

    def _key(self, head: str):
        """(key, hint) from a parameter header, or None when malformed."""
        key = head.strip()
        return (key, None) if key else None

    def _value(self, key: str, hint, raw: str) -> object:
        typ = self.parser.param_type(self._call.name, key)
        return coerce(raw, typ, self.STRUCTURED_UNTYPED)

    # -- reading -------------------------------------------------------------------------

    def advance(self, buf: str, final: bool) -> None:
        while self.end is None and self.fail_at is None:
            if not self._step(buf):
                return

    def _step(self, buf: str) -> bool:
        """One element; False when more text is needed (or the frame ended/failed)."""
        if self._phase == 0:
            p = self.pos
            if self.SECTION_END is not None:
                r = expect(buf, p, self.SECTION_END)
                if r is not NEED_MORE and r != MISMATCH:
                    self.end = r
                    return False
                waiting = r is NEED_MORE
                q = expect(buf, p, self.CALL_OPEN)
                if q is NEED_MORE or (q == MISMATCH and waiting):
                    return False
                if q == MISMATCH:
                    self.fail(self.start)
                    return False
                p = q
            elif self.CALL_OPEN:
                q = expect(buf, p, self.CALL_OPEN)
                if q is NEED_MORE:
                    return False
                if q == MISMATCH:
                    self.fail(self.start)
                    return False
                p = q
            best = -1
            best_lit = ""
            for lit in self.HEADER_ENDS:
                j = buf.find(lit, p)
                if j >= 0 and (best < 0 or j < best):
                    best, best_lit = j, lit
            if best < 0:
                return False
            name = self._name(buf[p:best])
            if name is None:
                self.fail(self.start)
                return False
            self._call = CallState(name)
            self._keys = set()
            if not self.REQUIRE_PARAMS:
                self.calls.append(self._call)
            self.pos = best + len(best_lit) if self.HEADER_END_CONSUMED else best
            self._phase = 1
            return True
        if self._phase == 1:
            p = self.pos
            r = expect(buf, p, self.PARAM_OPEN)
            if r is NEED_MORE:
                return False
            if r == MISMATCH:
                self._phase = 2
                return True
            h = buf.find(self.PARAM_HEAD_END, r)
            if h < 0:
                return False
            kv = self._key(buf[r:h])
            if kv is None:
                self.fail(self.start)
                return False
            v = h + len(self.PARAM_HEAD_END)
            if self.PARAM_VALUE_OPEN:
                v = expect(buf, v, self.PARAM_VALUE_OPEN)
                if v is NEED_MORE:
                    return False
                if v == MISMATCH:
                    self.fail(self.start)
                    return False
            e = buf.find(self.PARAM_CLOSE, v)
            if e < 0:
                return False
            key, hint = kv
            if key not in self._keys:
                if not self._keys and self.REQUIRE_PARAMS:
                    self.calls.append(self._call)
                value = self._value(key, hint, buf[v:e])
                sp = self.SPACED
                sep = (", " if sp else ",") if self._keys else "{"
                self._keys.add(key)
                self._call.pieces.append(f"{sep}{dumps(key)}{': ' if sp else ':'}{dumps(value, spaced=sp)}")
            self.pos = e + len(self.PARAM_CLOSE)
            return True
        k = self._phase - 2
        if k == len(self.CALL_CLOSE):
            if self.REQUIRE_PARAMS and not self._keys:
                self.parser._failed = True
            self._call.pieces.append("}" if self._keys else "{}")
            self._call.closed = True
            self._phase = 0
            if self.SECTION_END is None:
                self.end = self.pos
                return False
            return True
        r = expect(buf, self.pos, self.CALL_CLOSE[k])
        if r is NEED_MORE:
            return False
        if r == MISMATCH:
            self.fail(self.start)
            return False
        self.pos = r
        self._phase += 1
        return True


class QwenXmlToolParser(FramedToolParser):
    """Qwen3-Coder XML parameters."""

    name = "qwen_xml"
    STARTS = ("<tool_call>",)

    class FRAME(_TagFrame):
        __slots__ = ()
        CALL_OPEN = "<function="
        PARAM_OPEN = "<parameter="
        PARAM_CLOSE = "</parameter>"
        CALL_CLOSE = ("</function>", "</tool_call>")


class _GlmFrame(_TagFrame):
    __slots__ = ()
    HEADER_ENDS = ("<arg_key>", "</tool_call>")
    HEADER_END_CONSUMED = False
    PARAM_OPEN = "<arg_key>"
    PARAM_HEAD_END = "</arg_key>"
    PARAM_VALUE_OPEN = "<arg_value>"
    PARAM_CLOSE = "</arg_value>"
    CALL_CLOSE = ("</tool_call>",)

    def _name(self, header):
        name = header.strip()
        return name if name and "<" not in name and "\n" not in name else None


class Glm45ToolParser(FramedToolParser):
    """GLM-4.5 / 4.6: ``<tool_call>NAME\\n<arg_key>…</arg_key>\\n<arg_value>…</arg_value>``."""

    name = "glm45_moe"
    STARTS = ("<tool_call>",)
    FRAME = _GlmFrame


class Glm47ToolParser(Glm45ToolParser):
    """GLM-4.7 / 5: the same tags without newlines between them."""

    name = "glm47_moe"


class MinimaxM2ToolParser(FramedToolParser):
    """MiniMax-M2 ``<minimax:tool_call>`` blocks."""

    name = "minimax_m2"
    STARTS = ("<minimax:tool_call>",)

    class FRAME(_TagFrame):
        __slots__ = ()
        SECTION_END = "</minimax:tool_call>"
        CALL_OPEN = '<invoke name="'
        HEADER_ENDS = ('">',)
        PARAM_OPEN = '<parameter name="'
        PARAM_HEAD_END = '">'
        PARAM_CLOSE = "</parameter>"
        CALL_CLOSE = ("</invoke>",)
        STRUCTURED_UNTYPED = False


class Step3ToolParser(FramedToolParser):
    """Step-3 ``<｜tool_calls_begin｜>`` with ``steptml`` invokes."""

    name = "step3"
    STARTS = ("<｜tool_calls_begin｜>",)

    class FRAME(_TagFrame):
        __slots__ = ()
        SECTION_END = "<｜tool_calls_end｜>"
        CALL_OPEN = '<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="'
        HEADER_ENDS = ('">',)
        PARAM_OPEN = '<steptml:parameter name="'
        PARAM_HEAD_END = '">'
        PARAM_CLOSE = "</steptml:parameter>"
        CALL_CLOSE = ("</steptml:invoke>", "<｜tool_call_end｜>")
        REQUIRE_PARAMS = True


_DSML = "｜DSML｜"


class _DsmlFrame(_TagFrame):
    __slots__ = ()
    CALL_OPEN = f'<{_DSML}invoke name="'
    HEADER_ENDS = ('">',)
    PARAM_OPEN = f"<{_DSML}parameter "
    PARAM_HEAD_END = ">"
    PARAM_CLOSE = f"</{_DSML}parameter>"
    CALL_CLOSE = (f"</{_DSML}invoke>",)

    def _key(self, head):
        key = attr(" " + head, "name")
        flag = attr(" " + head, "string")
        if not key or flag not in ("true", "false"):
            return None
        return key, flag == "true"

    def _value(self, key, is_string, raw):
        if is_string:
            return raw
        try:
            return loads(raw.strip())
        except ValueError:
            return raw


class DeepSeek32ToolParser(FramedToolParser):
    """DeepSeek V3.2 DSML (``function_calls`` block)."""

    name = "deepseek32"
    STARTS = (f"<{_DSML}function_calls>",)
    RSTRIP_BEFORE_FRAME = True

    class FRAME(_DsmlFrame):
        __slots__ = ()
        SECTION_END = f"</{_DSML}function_calls>"


class DeepSeekV4ToolParser(FramedToolParser):
    """DeepSeek V4 DSML (``tool_calls`` block)."""

    name = "deepseek_v4"
    STARTS = (f"<{_DSML}tool_calls>",)
    RSTRIP_BEFORE_FRAME = True

    class FRAME(_DsmlFrame):
        __slots__ = ()
        SECTION_END = f"</{_DSML}tool_calls>"


_V41_BLOCK = f"<{_DSML} calls>"
_V41_INVOKE = f'<{_DSML} invoke name="'


class DeepSeekV41ToolParser(FramedToolParser):
    """DeepSeek V4.1 DSML: a space opens every tag (``<｜DSML｜ calls>``); an invoke may
    stand outside a block; exactly the blank line before the tools is not content; the
    arguments are written with spaces (``{"k": 1, "j": 2}``)."""

    name = "deepseek_v41"
    STARTS = (_V41_BLOCK, _V41_INVOKE)
    FRAME_SEPARATOR = "\n\n"

    class FRAME(_DsmlFrame):
        __slots__ = ()
        SECTION_END = f"</{_DSML} calls>"
        CALL_OPEN = _V41_INVOKE
        PARAM_OPEN = f"<{_DSML} parameter "
        PARAM_CLOSE = f"</{_DSML} parameter>"
        CALL_CLOSE = (f"</{_DSML} invoke>",)
        SPACED = True

    class LONE_FRAME(FRAME):
        """An invoke outside a block: the frame is that one call."""

        __slots__ = ()
        SECTION_END = None
        CALL_OPEN = ""

    def new_frame(self, marker: str) -> Frame:
        cls = self.LONE_FRAME if marker == _V41_INVOKE else self.FRAME
        return cls(self, 0, marker)


def _xtml_unescape(s: str | None) -> str | None:
    return None if s is None else s.replace("&quot;", '"').replace("&amp;", "&")


class KimiK3ToolParser(FramedToolParser):
    """Kimi-K3 XTML ``tools`` channel; the ``response`` channel is unwrapped into content."""

    name = "kimi_k3"
    STARTS = ("<|open|>tools<|sep|>",)
    STRIP = ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>")

    class FRAME(_TagFrame):
        __slots__ = ()
        SECTION_END = "<|close|>tools<|sep|>"
        CALL_OPEN = "<|open|>call "
        HEADER_ENDS = ("<|sep|>",)
        PARAM_OPEN = "<|open|>argument "
        PARAM_HEAD_END = "<|sep|>"
        PARAM_CLOSE = "<|close|>argument<|sep|>"
        CALL_CLOSE = ("<|close|>call<|sep|>",)

        def _name(self, header):
            name = _xtml_unescape(attr(" " + header, "tool"))
            return name or None

        def _key(self, head):
            key = _xtml_unescape(attr(" " + head, "key"))
            if key is None:
                return None
            return key, _xtml_unescape(attr(" " + head, "type")) or "string"

        def _value(self, key, typ, raw):
            if typ == "string":
                return raw
            try:
                return loads(raw)
            except ValueError:
                return raw


__all__ = [
    "QwenXmlToolParser", "Glm45ToolParser", "Glm47ToolParser", "MinimaxM2ToolParser",
    "Step3ToolParser", "DeepSeek32ToolParser", "DeepSeekV4ToolParser", "DeepSeekV41ToolParser",
    "KimiK3ToolParser",
]
