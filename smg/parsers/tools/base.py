"""Tool-call parser interface and the framed streaming engine every format uses.

A tool parser turns a model's generated text into OpenAI ``tool_calls`` plus the remaining
content, either at once (:meth:`ToolParser.parse`) or as the text streams
(:meth:`ToolParser.feed` per chunk, :meth:`ToolParser.finish` at the end).

Most formats share one shape: ordinary text, then a *frame* opened by a marker
(``<tool_call>``, ``[TOOL_CALLS]``, ``<｜tool▁calls▁begin｜>``…) holding one or more calls.
:class:`FramedToolParser` runs that shape; a format supplies its markers and a
:class:`Frame` class that reads one frame.  Rules the engine keeps:

- **Split invariance.**  Text outside frames is held back only while its tail could still
  become a marker; a frame's calls are emitted in order, a name once complete, arguments as
  canonical JSON prefixes that only ever grow.  So for well-formed output the deltas,
  concatenated, equal :meth:`~ToolParser.parse`'s result for every way the text is split.
- **Fallback to content.**  A frame that turns out malformed before anything of it was
  emitted, or that is cut off by the end of the text, is returned as ordinary text.  A frame
  whose extent is clear but whose content is not a call is *skipped* (consumed, no call); a
  stream that has not streamed any call yet returns it as text instead.  In complete mode,
  formats marked ``ALL_OR_NOTHING`` return the whole text as content when no call was found
  and some frame was malformed.  (A stream that already emitted part of a call cannot take
  it back: the call stays as emitted and the rest of the frame is dropped.)
- **Calls to tools not in the request** are kept, except by formats marked ``DROP_UNKNOWN``.
- **No exception escapes** :meth:`parse`, :meth:`feed` or :meth:`finish` for any input; an
  unexpected error inside a frame reader is treated as a malformed frame.
- **Bounded memory.**  The engine keeps only the text not yet emitted: the held-back marker
  prefix, or the frame being read.
"""
from __future__ import annotations

import os
import random
import re
import string
from dataclasses import dataclass, field

__all__ = [
    "ToolCall", "ToolCallDelta", "ToolParseResult", "ToolStreamDelta", "ToolParser",
    "PassthroughToolParser", "FramedToolParser", "Frame", "CallState", "new_call_id",
]

_ID_ALPHABET = string.ascii_letters + string.digits
# OpenAI-style call ids: "call_" and 24 alphanumerics.
ID_PREFIX = "call_"
ID_LENGTH = 24


# Ids only need to be unique, not secret: a PRNG seeded once from the OS (a system-random
# call per character costs a syscall each, which dominated streaming time).
_ID_RNG = random.Random(os.urandom(32))


def new_call_id() -> str:
    """Returns a fresh OpenAI-style tool call id, ``call_`` + 24 random alphanumerics."""
    return ID_PREFIX + "".join(_ID_RNG.choices(_ID_ALPHABET, k=ID_LENGTH))


@dataclass(slots=True)
class ToolCall:
    """One parsed call (complete mode)."""

    index: int
    name: str
    arguments: str  # JSON text of the arguments object
    id: str


@dataclass(slots=True)
class ToolCallDelta:
    """A streamed piece of one call."""

    index: int
    id: str | None = None  # set on the first delta of a call
    name: str | None = None  # set on the first delta of a call
    arguments: str = ""  # JSON fragment; concatenated over deltas = the complete arguments


@dataclass(slots=True)
class ToolParseResult:
    normal_text: str
    calls: list  # [ToolCall]


@dataclass(slots=True)
class ToolStreamDelta:
    normal_text: str = ""
    calls: list = field(default_factory=list)  # [ToolCallDelta]


class ToolParser:
    """One instance per request or stream.

    ``tools`` is the request's OpenAI ``tools`` list (may be None); formats whose values are
    untyped text read the JSON-schema types from it.
    """

    name = "base"

    def __init__(self, tools: list | None = None) -> None:
        self.tools = tools
        self._schemas: dict[str, dict] | None = None

    def parse(self, text: str) -> ToolParseResult:  # pragma: no cover - interface
        raise NotImplementedError

    def feed(self, chunk: str) -> ToolStreamDelta:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self) -> ToolStreamDelta:  # pragma: no cover - interface
        raise NotImplementedError

    # -- request tools ---------------------------------------------------------------

    def tool_names(self) -> frozenset[str] | None:
        """Names of the request's tools, or None when the request has no tools list."""
        if self.tools is None:
            return None
        return frozenset(self.schemas())

    def schemas(self) -> dict[str, dict]:
        """Maps each request tool's name to its parameters JSON schema (built once)."""
        if self._schemas is None:
            out: dict[str, dict] = {}
            for tool in self.tools or ():
                fn = tool.get("function") if isinstance(tool, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                    params = fn.get("parameters")
                    out[fn["name"]] = params if isinstance(params, dict) else {}
            self._schemas = out
        return self._schemas

    def param_type(self, tool: str, key: str) -> str | None:
        """JSON-schema type of a tool's parameter (first non-null of a list), or None."""
        props = self.schemas().get(tool, {}).get("properties")
        if not isinstance(props, dict):
            return None
        prop = props.get(key)
        if not isinstance(prop, dict):
            return None
        t = prop.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), None)
        return t if isinstance(t, str) else None


class PassthroughToolParser(ToolParser):
    """Parses no tool calls: all text is content."""

    name = "passthrough"

    def parse(self, text: str) -> ToolParseResult:
        return ToolParseResult(text, [])

    def feed(self, chunk: str) -> ToolStreamDelta:
        return ToolStreamDelta(chunk)

    def finish(self) -> ToolStreamDelta:
        return ToolStreamDelta()


class CallState:
    """A call as a frame reader sees it: its name once known, argument text pieces."""

    __slots__ = ("name", "pieces", "closed", "dropped")

    def __init__(self, name: str | None = None, pieces: list[str] | None = None) -> None:
        self.name = name
        self.pieces: list[str] = [] if pieces is None else pieces
        self.closed = False
        self.dropped = False  # malformed: left out unless already streamed


class Frame:
    """Reads one frame of one format, incrementally.

    ``advance(buf, final)`` is called with the engine's buffer each time it grows; the frame
    started at ``self.start`` and reads on from where it stopped.  It updates:

    - ``calls``: the calls seen so far, in order ([CallState]);
    - ``end``: index in ``buf`` just past the frame, once complete;
    - ``fail_at``: index in ``buf`` where the frame proved malformed; text from there on is
      read again as ordinary text;
    - ``skipped`` (with ``end``): the frame's extent is known but it holds no call.

    The name and argument pieces a frame exposes must only ever grow, and ``end``/``fail_at``
    must depend on the text alone, not on how it was split.
    """

    __slots__ = ("parser", "start", "pos", "calls", "end", "fail_at", "skipped")

    def __init__(self, parser: FramedToolParser, start: int, marker: str) -> None:
        self.parser = parser
        self.start = start
        self.pos = start + len(marker)  # where reading resumes
        self.calls: list[CallState] = []
        self.end: int | None = None
        self.fail_at: int | None = None
        self.skipped = False

    def advance(self, buf: str, final: bool) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, at: int) -> None:
        self.fail_at = at

    def skip(self, end: int) -> None:
        """The frame ends at ``end`` but holds no call (malformed content, clear extent)."""
        self.skipped = True
        self.end = end


def _prefix_set(markers: tuple[str, ...]) -> frozenset[str]:
    return frozenset(m[:k] for m in markers for k in range(1, len(m)))


class FramedToolParser(ToolParser):
    """Runs a frame-based format; subclasses set the class attributes below."""

    STARTS: tuple[str, ...] = ()  # markers that open a frame
    STRIP: tuple[str, ...] = ()  # control tokens removed from content
    KEEP_TEXT_AFTER = False  # content after the first frame is kept (else dropped)
    SINGLE_FRAME = False  # only the first complete frame is read; the rest is content
    ALL_OR_NOTHING = True  # complete mode: no call + a malformed frame = the whole text is content
    DROP_UNKNOWN = False  # calls to tools not in the request are left out
    RSTRIP_BEFORE_FRAME = False  # trailing whitespace of content before a frame is dropped
    TRIM_CONTENT = False  # the content as a whole is stripped of surrounding whitespace
    FRAME_SEPARATOR: str | None = None  # this exact whitespace before a frame is not content
    FRAME: type[Frame] = Frame

    # Built once per class by __init_subclass__.
    _marker_re: re.Pattern[str]
    _prefixes: frozenset[str]
    _max_marker: int
    _starts_set: frozenset[str]

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        markers = tuple(dict.fromkeys(cls.STARTS + cls.STRIP))
        if markers:
            cls._marker_re = re.compile(
                "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
            )
            cls._prefixes = _prefix_set(markers)
            cls._max_marker = max(map(len, markers))
        cls._starts_set = frozenset(cls.STARTS)

    def __init__(self, tools: list | None = None) -> None:
        super().__init__(tools)
        self._buf = ""
        self._i = 0  # scan position in _buf (outside a frame)
        self._frame: Frame | None = None
        self._recs: list[list] = []  # per call of the current frame: [index | -1 | None, pieces sent]
        self._next_index = 0
        self._seen_frame = False
        self._failed = False
        self._commit = False  # complete mode: emit a frame's calls only when it ends
        self._no_frames = False  # SINGLE_FRAME: the frame was read; the rest is content
        self._ws_hold = ""  # trailing whitespace held back (RSTRIP_BEFORE_FRAME)
        self._content_seen = False  # any non-whitespace content so far
        self._lead_done = False  # TRIM_CONTENT: leading whitespace is behind us
        self._names = self.tool_names() if self.DROP_UNKNOWN else None

    # -- public API ----------------------------------------------------------------------

    def parse(self, text: str) -> ToolParseResult:
        """Parses complete output.  Returns content and calls; raises nothing."""
        p = type(self)(self.tools)
        p._commit = True
        p._buf = text
        d = p._safe_run(final=True)
        if p._failed and self.ALL_OR_NOTHING and not d.calls:
            return ToolParseResult(text, [])
        calls: list[ToolCall] = []
        for c in d.calls:
            if c.name is not None:
                calls.append(ToolCall(c.index, c.name, c.arguments, c.id or new_call_id()))
            else:
                calls[-1].arguments += c.arguments
        return ToolParseResult(d.normal_text, calls)

    def feed(self, chunk: str) -> ToolStreamDelta:
        """Reads one streamed chunk.  Returns the content and call deltas it completes."""
        if not chunk:
            return ToolStreamDelta()
        self._buf += chunk
        return self._safe_run(final=False)

    def finish(self) -> ToolStreamDelta:
        """Flushes what was held back at the end of the stream."""
        return self._safe_run(final=True)

    # -- engine ----------------------------------------------------------------------

    def _safe_run(self, final: bool) -> ToolStreamDelta:
        out = ToolStreamDelta()
        text: list[str] = []
        try:
            self._run(final, text, out.calls)
        except Exception:  # a bug in a frame reader must not break the stream
            self._failed = True
            if self._frame is not None:
                self._frame = None
                self._recs = []
            if not self._seen_frame or self.KEEP_TEXT_AFTER:
                text.append(self._buf[self._i:])
            self._buf, self._i = "", 0
        out.normal_text = "".join(text)
        return out

    def new_frame(self, marker: str) -> Frame:
        """The reader for a frame opened by ``marker`` at the start of the buffer."""
        return self.FRAME(self, 0, marker)

    def accept_start(self, marker: str) -> bool:
        """Whether a start marker found here opens a frame (else it is content)."""
        return True

    def _content(self, s: str, text: list[str]) -> None:
        if not s:
            return
        if not self._content_seen and not s.isspace():
            self._content_seen = True
        if self._seen_frame and not self.KEEP_TEXT_AFTER:
            return
        if self.TRIM_CONTENT and not self._lead_done:
            s = s.lstrip()
            if not s:
                return
            self._lead_done = True
        if self.RSTRIP_BEFORE_FRAME or self.TRIM_CONTENT or self.FRAME_SEPARATOR:
            s = self._ws_hold + s
            body = s.rstrip()
            self._ws_hold = s[len(body):]
            s = body
            if not s:
                return
        text.append(s)

    def _run(self, final: bool, text: list[str], calls: list[ToolCallDelta]) -> None:
        buf = self._buf
        while True:
            fr = self._frame
            if fr is None:
                if self._no_frames:
                    self._content(buf[self._i:], text)
                    self._i = len(buf)
                    break
                m = self._marker_re.search(buf, self._i) if self.STARTS else None
                if m is None:
                    hold = 0 if final else self._holdback(buf)
                    self._content(buf[self._i:len(buf) - hold], text)
                    self._i = len(buf) - hold
                    break
                self._content(buf[self._i:m.start()], text)
                marker = m.group()
                if marker not in self._starts_set:
                    self._i = m.end()
                    continue
                if not self.accept_start(marker):
                    self._content(marker, text)
                    self._i = m.end()
                    continue
                if self.FRAME_SEPARATOR and self._ws_hold:
                    held = self._ws_hold
                    if held.endswith(self.FRAME_SEPARATOR):
                        held = held[: -len(self.FRAME_SEPARATOR)]
                    if held and not self._seen_frame:
                        text.append(held)
                    self._ws_hold = ""
                if self.RSTRIP_BEFORE_FRAME:
                    self._ws_hold = ""
                # The frame reads from the start of the buffer: drop what was emitted.
                buf = self._buf = buf[m.start():]
                self._frame = fr = self.new_frame(marker)
                self._i = 0
            fr.advance(buf, final)
            if fr.fail_at is not None:
                self._failed = True
                cut = max(fr.fail_at, fr.start + 1)
                sent = any(r[0] is not None for r in self._recs)
                if not sent:
                    self._content(buf[fr.start:cut], text)
                self._i = cut
                self._end_frame(seen=sent)
                continue
            if fr.skipped:
                self._failed = True
                if not self._commit and self._next_index == 0:
                    # no call streamed yet: a stream keeps the frame's text as content
                    self._content(buf[fr.start:fr.start + 1], text)
                    self._i = fr.start + 1
                    self._end_frame(seen=False)
                    continue
                self._i = fr.end
                self._end_frame(seen=True)
                continue
            if not self._commit:
                self._emit(fr, calls)
            if fr.end is not None:
                if self._commit:
                    self._emit(fr, calls)
                self._i = fr.end
                self._end_frame(seen=True)
                if self.SINGLE_FRAME:
                    self._no_frames = True
                continue
            if final:  # cut off by the end of the output
                self._failed = True
                sent = any(r[0] is not None for r in self._recs)
                if not sent:
                    self._content(buf[fr.start:], text)
                self._i = len(buf)
                self._end_frame(seen=sent)
            break
        if final and self._ws_hold:
            if not self.TRIM_CONTENT and (not self._seen_frame or self.KEEP_TEXT_AFTER):
                text.append(self._ws_hold)
            self._ws_hold = ""
        if self._frame is None and self._i:
            self._buf = buf[self._i:]
            self._i = 0

    def _end_frame(self, *, seen: bool) -> None:
        self._frame = None
        self._recs = []
        if seen:
            self._seen_frame = True

    def _holdback(self, buf: str) -> int:
        prefixes = self._prefixes
        for k in range(min(self._max_marker - 1, len(buf) - self._i), 0, -1):
            if buf[-k:] in prefixes:
                return k
        return 0

    def _emit(self, fr: Frame, out: list[ToolCallDelta]) -> None:
        recs = self._recs
        for k, c in enumerate(fr.calls):
            if k == len(recs):
                recs.append([None, 0])
            rec = recs[k]
            if rec[0] is None and c.dropped:
                rec[0] = -1
            if rec[0] is None:
                if c.name is None:
                    break  # calls go out in order
                names = self._names
                if names is not None and c.name not in names:
                    rec[0] = -1
                else:
                    rec[0] = self._next_index
                    self._next_index += 1
                    out.append(ToolCallDelta(rec[0], new_call_id(), c.name))
            if rec[0] == -1:
                continue
            pieces = c.pieces
            if rec[1] < len(pieces):
                frag = "".join(pieces[rec[1]:])
                rec[1] = len(pieces)
                if frag:
                    last = out[-1] if out else None
                    if last is not None and last.index == rec[0]:
                        last.arguments += frag
                    else:
                        out.append(ToolCallDelta(rec[0], arguments=frag))
