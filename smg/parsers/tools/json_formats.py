"""Tool formats whose calls are JSON objects: json, qwen (Hermes), llama, mistral, cohere,
inkling, and the token-framed deepseek, deepseek31 and kimik2.

Formats (what a frame looks like after its opening marker):

- **json**: a bare JSON object ``{"name": …, "arguments"|"parameters": {…}}`` or an array of
  them, anywhere in the text; only the first complete JSON value is read, the text around it
  is content.
- **qwen**: ``<tool_call>`` JSON object ``</tool_call>`` (key ``arguments``), repeated.
- **llama** (3.x): ``<|python_tag|>`` (or ``{`` opening the output), then call objects using
  ``parameters``, separated by ``;``, up to the end of the output.
- **mistral**: ``[TOOL_CALLS]`` then a JSON array (or object) of calls.
- **cohere**: ``<|START_ACTION|>`` JSON (``tool_name`` / ``parameters``) ``<|END_ACTION|>``;
  the response markers around content are removed and the content is stripped.
- **inkling**: ``<|content_invoke_tool_json|>{"name": …, "args": {…}}<|end_message|>``; the
  ``<|message_model|>…`` header and other framing tokens are removed from content; calls to
  tools not in the request, malformed calls and text-mode invocations are dropped.
- **deepseek** (V3): ``<｜tool▁calls▁begin｜>`` then per call
  ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{ARGS}\\n```<｜tool▁call▁end｜>``,
  then ``<｜tool▁calls▁end｜>``.
- **deepseek31** (V3.1): as deepseek, with ``NAME<｜tool▁sep｜>{ARGS}`` (no type, no fence).
- **kimik2**: ``<|tool_calls_section_begin|>`` then per call
  ``<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{ARGS}<|tool_call_end|>``,
  then ``<|tool_calls_section_end|>``; the arguments are kept as written (trimmed), after
  checking they are JSON.

Arguments are canonical compact JSON (see :mod:`smg.parsers.partial_json`) except kimik2's.
"""
from __future__ import annotations

import json

from ..partial_json import JsonStream
from ._scan import MISMATCH, NEED_MORE, expect, expect_any, partial_suffix, skip_ws
from .base import CallState, FramedToolParser, Frame


class JsonFrame(Frame):
    """A frame holding one JSON value of calls (an object, or an array of objects)."""

    __slots__ = ("js", "_synced", "_phase")

    NAME_KEY = "name"
    ARGS_KEYS: tuple[str, ...] = ("arguments",)
    CLOSERS: tuple[str, ...] = ()  # literal expected after the JSON value (after whitespace)
    CLOSER_OPTIONAL = False  # a missing closer ends the frame right after the value
    NAMES_REQUIRED = True  # an object without a name makes the frame malformed

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self.js = JsonStream(name_key=self.NAME_KEY, args_keys=self.ARGS_KEYS)
        self._synced = 0
        self._phase = 0

    def _sync(self) -> None:
        js_calls = self.js.calls
        calls = self.calls
        while self._synced < len(js_calls):
            jc = js_calls[self._synced]
            if self._synced == len(calls):
                calls.append(CallState(None, jc[1]))
            c = calls[self._synced]
            if c.name is None and jc[0] is not None:
                c.name = jc[0]
            if not jc[3]:
                break
            if not jc[2]:
                jc[1].append("{}")
            c.closed = True
            self._synced += 1

    def advance(self, buf: str, final: bool) -> None:
        if self._phase == 0:
            js = self.js
            js.feed(buf, self.pos)
            self._sync()
            if js.failed:
                self.fail(js.error_at)
                return
            if not js.done:
                return
            unnamed = [k for k, jc in enumerate(js.calls) if jc[0] is None]
            if unnamed and self.NAMES_REQUIRED:
                self.fail(self.start)
                return
            for k in unnamed:
                self.calls[k].dropped = True
            self._phase = 1
            self.pos = js.end
        if not self.CLOSERS:
            self.end = self.pos
            return
        r = expect_any(buf, self.pos, self.CLOSERS)
        if r is NEED_MORE:
            if final and self.CLOSER_OPTIONAL:
                self.end = self.pos
            return
        if r == MISMATCH:
            if self.CLOSER_OPTIONAL:
                self.end = self.pos
            else:
                self.fail(self.start)
            return
        self.end = r[1]


class JsonToolParser(FramedToolParser):
    """First JSON value in the text: one call object or an array of them."""

    name = "json"
    STARTS = ("{", "[")
    KEEP_TEXT_AFTER = True
    SINGLE_FRAME = True
    ALL_OR_NOTHING = False

    class FRAME(JsonFrame):
        __slots__ = ()
        ARGS_KEYS = ("arguments", "parameters")
        NAMES_REQUIRED = False

        def __init__(self, parser, start, marker) -> None:
            super().__init__(parser, start, marker)
            self.pos = start  # the marker is the value's first character


_QWEN_OPEN = "<tool_call>\n"
_QWEN_CLOSE = "\n</tool_call>"


class _QwenFrame(JsonFrame):
    """``<tool_call>\n`` JSON ``\n</tool_call>``: the newlines are part of the frame; a body
    that is not one call object is skipped up to the first ``\n</tool_call>``."""

    __slots__ = ()

    def advance(self, buf: str, final: bool) -> None:
        if self._phase == 0 and self.pos == self.start + len("<tool_call>"):
            r = expect(buf, self.start, _QWEN_OPEN, ws=False)
            if r is NEED_MORE:
                return
            if r == MISMATCH:
                return self.fail(self.start)
            self.pos = r
        if self._phase == 0:
            js = self.js
            js.feed(buf, self.pos)
            self._sync()
            if js.failed or (js.done and (js.call_depth != 1 or any(c[0] is None for c in js.calls))):
                self._phase = 2
            elif not js.done:
                return
            else:
                self._phase = 1
                self.pos = js.end
        if self._phase == 1:
            q = skip_ws(buf, self.pos)
            r = expect(buf, q, "</tool_call>", ws=False)
            if r is NEED_MORE:
                return
            if r != MISMATCH and q > self.pos and buf[q - 1] == "\n":
                self.end = r
                return
            self._phase = 2
        j = buf.find(_QWEN_CLOSE, self.start + len(_QWEN_OPEN) - 1)
        if j >= 0:
            for c in self.calls:
                c.dropped = True
            self.skip(j + len(_QWEN_CLOSE))


class QwenToolParser(FramedToolParser):
    """Hermes style: ``<tool_call>\n{json}\n</tool_call>``."""

    name = "qwen"
    STARTS = ("<tool_call>",)
    FRAME = _QwenFrame


class _LlamaFrame(Frame):
    """JSON call objects separated by ``;`` up to the end of the output."""

    __slots__ = ("js", "_phase")

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        if marker == "{":
            self.pos = start
        self.js: JsonStream | None = None
        self._phase = 0

    def advance(self, buf: str, final: bool) -> None:
        while True:
            if self._phase == 0:
                if self.js is None:
                    p = skip_ws(buf, self.pos)
                    if p == len(buf):
                        if final and self.calls:
                            self.end = p
                        return
                    if buf[p] != "{":
                        return self.fail(self.start)
                    self.js = JsonStream(name_key="name", args_keys=("parameters",))
                    self.pos = p
                js = self.js
                js.feed(buf, self.pos)
                if js.calls and (not self.calls or self.calls[-1].pieces is not js.calls[0][1]):
                    self.calls.append(CallState(None, js.calls[0][1]))
                if js.calls and self.calls[-1].name is None:
                    self.calls[-1].name = js.calls[0][0]
                if js.failed:
                    return self.fail(self.start)
                if not js.done:
                    return
                jc = js.calls[0] if js.calls else None
                if jc is None or jc[0] is None:
                    return self.fail(self.start)
                if not jc[2]:
                    jc[1].append("{}")
                self.calls[-1].closed = True
                self.pos = js.end
                self._phase = 1
            p = skip_ws(buf, self.pos)
            if p == len(buf):
                if final:
                    self.end = p
                return
            if buf[p] != ";":
                return self.fail(self.start)
            self.pos = p + 1
            self.js = None
            self._phase = 0


class LlamaToolParser(FramedToolParser):
    """Llama 3.x: ``<|python_tag|>`` then calls (``parameters``) separated by ``;``, or the
    same calls opening the output; anything after them makes the output plain content."""

    name = "llama"
    STARTS = ("<|python_tag|>", "{")
    FRAME = _LlamaFrame

    def accept_start(self, marker: str) -> bool:
        return marker != "{" or not self._content_seen


class MistralToolParser(FramedToolParser):
    """``[TOOL_CALLS] [{…}, …]``; objects without a name are left out."""

    name = "mistral"
    STARTS = ("[TOOL_CALLS]",)

    class FRAME(JsonFrame):
        __slots__ = ()
        NAMES_REQUIRED = False

        def advance(self, buf, final):
            if self._phase == 0 and not self.js.calls:
                p = skip_ws(buf, self.pos)
                if p == len(buf):
                    return
                if buf[p] != "[":
                    return self.fail(self.start)
            super().advance(buf, final)


class CohereToolParser(FramedToolParser):
    """``<|START_ACTION|>[{"tool_name": …, "parameters": {…}}]<|END_ACTION|>``."""

    name = "cohere"
    STARTS = ("<|START_ACTION|>",)
    STRIP = ("<|START_RESPONSE|>", "<|END_RESPONSE|>")
    KEEP_TEXT_AFTER = True
    TRIM_CONTENT = True

    class FRAME(JsonFrame):
        __slots__ = ()
        NAME_KEY = "tool_name"
        ARGS_KEYS = ("parameters",)
        CLOSERS = ("<|END_ACTION|>",)


_INK_JSON = "<|content_invoke_tool_json|>"
_INK_TEXT = "<|content_invoke_tool_text|>"
_INK_HEADER = "<|message_model|>"
_INK_END = ("<|end_message|>", "<|content_model_end_sampling|>")
_INK_STRIP = ("<|content_text|>", "<|content_thinking|>") + _INK_END


class _InklingFrame(JsonFrame):
    """A JSON invocation, a header (dropped up to the next control token), or a text-mode
    invocation (dropped up to its end token).  Malformed invocations are dropped too."""

    __slots__ = ("_mode",)
    ARGS_KEYS = ("args",)
    CLOSERS = _INK_END
    CLOSER_OPTIONAL = True

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self._mode = {"<|content_invoke_tool_json|>": "json", _INK_HEADER: "header"}.get(
            marker, "discard"
        )

    def advance(self, buf: str, final: bool) -> None:
        if self._mode == "header":
            j = buf.find("<|", self.pos)
            if j >= 0:
                self.end = j
            elif final:
                self.end = len(buf)
            return
        if self._mode == "json":
            p = skip_ws(buf, self.pos)
            if p < len(buf) and buf[p] != "{":
                self._mode = "discard"
            else:
                super().advance(buf, final)
                if self.fail_at is None:
                    return
                self.fail_at = None
                self.calls = []
                self._mode = "discard"
        # discard: up to and including the end token
        best = None
        for tok in _INK_END:
            j = buf.find(tok, self.pos)
            if j >= 0 and (best is None or j < best[0]):
                best = (j, tok)
        if best is not None:
            self.end = best[0] + len(best[1])
        elif final:
            self.end = len(buf)


class InklingToolParser(FramedToolParser):
    """Inkling TML: ``<|content_invoke_tool_json|>{"name": …, "args": {…}}<|end_message|>``."""

    name = "inkling"
    STARTS = (_INK_JSON, _INK_TEXT, _INK_HEADER)
    STRIP = _INK_STRIP
    KEEP_TEXT_AFTER = True
    ALL_OR_NOTHING = False
    DROP_UNKNOWN = True
    FRAME = _InklingFrame


class _SectionFrame(Frame):
    """A section of token-framed calls: ``SECTION_BEGIN (CALL)* SECTION_END``.

    Subclasses read one call's header (:meth:`_header`) and its arguments; this class walks
    the section.  Phases: 0 between calls, 1 in a call's arguments, 2+k before the k-th
    closing literal.
    """

    __slots__ = ("_phase", "js", "_call")

    CALL_BEGIN = ""
    SECTION_END = ""
    ARGS_END: tuple[str, ...] = ()  # literals closing a call after its arguments, in order

    def __init__(self, parser, start, marker) -> None:
        super().__init__(parser, start, marker)
        self._phase = 0
        self.js: JsonStream | None = None
        self._call: CallState | None = None

    def _header(self, buf: str, p: int):
        """Reads a call header at ``p`` (just after CALL_BEGIN): ``(name, args_start)``,
        None for more text, or -1 when malformed."""
        raise NotImplementedError

    _SKIP = 99  # phase: a malformed call is skipped up to its end token

    def _bad_call(self) -> None:
        """The current call is malformed: leave it out and skip to its end token."""
        if self._call is not None:
            self._call.dropped = True
        self.parser._failed = True
        self._phase = self._SKIP

    def advance(self, buf: str, final: bool) -> None:
        while True:
            if self._phase == self._SKIP:
                j = buf.find(self.ARGS_END[-1], self.pos)
                if j < 0:
                    if final:
                        self.end = len(buf)
                    return
                self.pos = j + len(self.ARGS_END[-1])
                self._call = None
                self._phase = 0
            if self._phase == 0:
                r = expect_any(buf, self.pos, (self.CALL_BEGIN, self.SECTION_END))
                if r is NEED_MORE or r == MISMATCH:
                    if final and self.calls:  # a section cut off after whole calls
                        self.end = len(buf)
                    elif r == MISMATCH:
                        self.fail(self.start)
                    return
                lit, q = r
                if lit == self.SECTION_END:
                    self.end = q
                    return
                h = self._header(buf, q)
                if h is NEED_MORE:
                    if final and self.calls:
                        self.end = len(buf)
                    return
                if h == MISMATCH:
                    self.pos = q
                    self._call = None
                    self._bad_call()
                    continue
                name, self.pos = h
                self._call = CallState(name)
                self.calls.append(self._call)
                self.js = JsonStream()
                self._phase = 1
            if self._phase == 1:
                if not self._args(buf, final):
                    if self._phase == self._SKIP:
                        continue
                    if final and len(self.calls) > 1:
                        self._call.dropped = True
                        self.end = len(buf)
                    return
                self._phase = 2
            while 2 <= self._phase < self._SKIP:  # the literals closing the call, in order
                k = self._phase - 2
                if k == len(self.ARGS_END):
                    self._call.closed = True
                    self._phase = 0
                    break
                r = expect(buf, self.pos, self.ARGS_END[k])
                if r is NEED_MORE:
                    return
                if r == MISMATCH:
                    self._bad_call()
                    break
                self.pos = r
                self._phase += 1

    def _args(self, buf: str, final: bool) -> bool:
        """Reads JSON arguments; True once they are complete."""
        js = self.js
        before = len(js.out)
        js.feed(buf, self.pos)
        if len(js.out) > before:
            self._call.pieces.extend(js.out[before:])
        if js.failed:
            self._bad_call()
            return False
        if not js.done:
            return False
        self.pos = js.end
        return True


_DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
_DS_CALLS_END = "<｜tool▁calls▁end｜>"
_DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
_DS_CALL_END = "<｜tool▁call▁end｜>"
_DS_SEP = "<｜tool▁sep｜>"


class DeepSeekToolParser(FramedToolParser):
    """DeepSeek V3 token format with a ```json fence around the arguments."""

    name = "deepseek"
    STARTS = (_DS_CALLS_BEGIN,)

    class FRAME(_SectionFrame):
        __slots__ = ()
        CALL_BEGIN = _DS_CALL_BEGIN
        SECTION_END = _DS_CALLS_END
        ARGS_END = ("```", _DS_CALL_END)

        def _header(self, buf, p):
            sep = buf.find(_DS_SEP, p)
            if sep < 0:
                return NEED_MORE if _DS_CALL_END not in buf[p:] else MISMATCH
            fence = buf.find("```json", sep)
            if fence < 0:
                return NEED_MORE if _DS_CALL_END not in buf[sep:] else MISMATCH
            name = buf[sep + len(_DS_SEP):fence].strip()
            if not name or "\n" in name:
                return MISMATCH
            return name, fence + 7


class DeepSeek31ToolParser(FramedToolParser):
    """DeepSeek V3.1: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{ARGS}<｜tool▁call▁end｜>``."""

    name = "deepseek31"
    STARTS = (_DS_CALLS_BEGIN,)

    class FRAME(_SectionFrame):
        __slots__ = ()
        CALL_BEGIN = _DS_CALL_BEGIN
        SECTION_END = _DS_CALLS_END
        ARGS_END = (_DS_CALL_END,)

        def _header(self, buf, p):
            sep = buf.find(_DS_SEP, p)
            if sep < 0:
                return NEED_MORE if _DS_CALL_END not in buf[p:] else MISMATCH
            name = buf[p:sep].strip()
            if not name:
                return MISMATCH
            return name, sep + len(_DS_SEP)


_K2_SECTION_BEGIN = "<|tool_calls_section_begin|>"
_K2_SECTION_END = "<|tool_calls_section_end|>"
_K2_CALL_BEGIN = "<|tool_call_begin|>"
_K2_ARG_BEGIN = "<|tool_call_argument_begin|>"
_K2_CALL_END = "<|tool_call_end|>"


class KimiK2ToolParser(FramedToolParser):
    """Kimi K2: ``functions.NAME:IDX`` headers, arguments kept as written."""

    name = "kimik2"
    STARTS = (_K2_SECTION_BEGIN,)

    class FRAME(_SectionFrame):
        __slots__ = ("_raw_from", "_sent_to")
        CALL_BEGIN = _K2_CALL_BEGIN
        SECTION_END = _K2_SECTION_END
        ARGS_END = (_K2_CALL_END,)

        def _header(self, buf, p):
            a = buf.find(_K2_ARG_BEGIN, p)
            if a < 0:
                return NEED_MORE if _K2_CALL_END not in buf[p:] else MISMATCH
            head = buf[p:a].strip()
            if head.startswith("functions."):
                head = head[len("functions."):]
            name, colon, idx = head.rpartition(":")
            if not colon or not name or not idx.isdigit():
                return MISMATCH
            self._raw_from = None
            self._sent_to = 0
            return name, a + len(_K2_ARG_BEGIN)

        def _args(self, buf, final):
            # Raw arguments up to the call's end token: leading and trailing whitespace
            # trimmed, validated as JSON once complete.
            if self._raw_from is None:
                p = skip_ws(buf, self.pos)
                if p == len(buf):
                    return False
                self._raw_from = self._sent_to = p
            end = buf.find(_K2_CALL_END, self._sent_to)
            if end < 0:
                tail = buf[self._sent_to:]
                safe = len(tail) - partial_suffix(tail, _K2_CALL_END)
                chunk = tail[:safe]
                body = chunk.rstrip()
                if body:
                    self._call.pieces.append(body)
                    self._sent_to += len(body)
                return False
            chunk = buf[self._sent_to:end].rstrip()
            raw = "".join(self._call.pieces) + chunk
            try:
                json.loads(raw)
            except ValueError:
                self._bad_call()
                return False
            if chunk:
                self._call.pieces.append(chunk)
            self.pos = end
            return True
