"""Pure-Python twin of smg._native.sse: an incremental Server-Sent-Events scanner, and the
stream-end watcher ``StreamEnd``.

Import ``SSEScanner`` and ``StreamEnd`` from :mod:`smg.streaming.sse` (the selector), not
from here.

Rules:
- Same API, limits, errors and results as the native module; tests/native/test_sse.py runs
  both scanners against one corpus and checks C == Py on random input, and
  tests/native/test_stream_end.py does the same for both StreamEnd classes.
- The scanner observes, never rewrites: the gateway forwards upstream bytes verbatim; the
  scanner reports the data of completed events, event counts, the ``[DONE]`` sentinel and
  the last data chunk. ``StreamEnd`` is the one rewriter here: it drops what a worker
  sends after ``[DONE]`` (its rules: the "stream end" section at the end of this file).
- Split invariance: what feed() returns, concatenated, and every attribute after feed_eof()
  do not depend on where the network split the stream.
- feed() raises only TypeError (argument not bytes-like) and RemoteProtocolError (an event
  larger than max_event_size, or input after such an error). Anything else is a bug.

Theory of operation (WHATWG HTML "Server-sent events", 9.2.6 "Interpreting an event stream"):
- A piece that holds a CR is first normalised to LF-only with two ``bytes.replace`` calls
  (CRLF -> LF, then CR -> LF). A CR that ends the piece sets ``_skip_lf`` so that an LF
  opening the next piece is dropped: CRLF split across two reads stays one terminator.
- With no event pending, ``bytes.find(b"\\n\\n")`` finds a whole event at once; the common
  ``data: {...}\\n\\n`` event then costs one find and one slice. Anything else goes line by
  line with ``bytes.find(b"\\n")``.
- The unterminated tail of a piece is appended to a bytearray, each byte once however many
  pieces the line spans (no re-joining of a growing tail).
"""

from __future__ import annotations

import sys
import time
from operator import index as _index

from smg.errors import RemoteProtocolError
from smg.http1.events import Data

# The API shared with smg._native.sse (its stub, sse.pyi); the rest is this twin's own.
__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEScanner", "StreamEnd", "usage_counts"]

#: Largest event accepted, counted as the content bytes of its lines (terminators excluded).
#: A chat-completion chunk is a few hundred bytes and a final chunk with usage or tool-call
#: arguments a few KiB; the big legitimate events are base64 payloads sent in one event
#: (partial images in image-generation streams), which run to a few MiB. 8 MiB keeps those
#: while bounding what one upstream can make the gateway buffer per stream.
DEFAULT_MAX_EVENT_SIZE = 8 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark; the spec drops one at stream start
_DONE = b"[DONE]"  # OpenAI end-of-stream sentinel
_LF = 10
_CR = 13
_SPACE = 32


class SSEScanner:
    """Incremental SSE scanner: feed it the upstream bytes, read back completed events."""

    __slots__ = (
        "_at_start",
        "_bom_held",
        "_bytes_seen",
        "_data_events",
        "_done",
        "_eof",
        "_ev_lines",
        "_ev_size",
        "_events",
        "_failed",
        "_first_t",
        "_last_data",
        "_last_t",
        "_line",
        "_max",
        "_parts",
        "_skip_lf",
        "_truncated",
    )

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        size = _index(max_event_size)
        if size < 1:
            raise ValueError(f"max_event_size must be >= 1, got {size}")
        # The native scanner stores a Py_ssize_t; larger values mean "no limit" in both.
        self._max = min(size, sys.maxsize)
        self._events = 0
        self._data_events = 0
        self._bytes_seen = 0
        self._done = False
        self._truncated = False
        self._last_data: bytes | None = None
        self._first_t = 0.0
        self._last_t = 0.0
        self._line = bytearray()  # pending unterminated line (never holds CR or LF)
        self._parts: list[bytes] = []  # data values of the current event
        self._ev_size = 0  # content bytes of the current event's lines
        self._ev_lines = False  # the current event has seen a non-blank line
        self._bom_held = 0  # 0..2 bytes of a possible BOM held back at stream start
        self._at_start = True
        self._skip_lf = False
        self._failed = False
        self._eof = False

    # --- read-only attributes -------------------------------------------------------

    @property
    def max_event_size(self) -> int:
        """The limit given to the constructor (clamped to sys.maxsize)."""
        return self._max

    @property
    def events(self) -> int:
        """Completed events, including those without a data field."""
        return self._events

    @property
    def data_events(self) -> int:
        """Completed events that had a data field."""
        return self._data_events

    @property
    def bytes_seen(self) -> int:
        """Bytes accepted by feed()."""
        return self._bytes_seen

    @property
    def done(self) -> bool:
        """True once an event whose data is exactly b"[DONE]" completed."""
        return self._done

    @property
    def truncated(self) -> bool:
        """True if feed_eof() found part of an event pending (or the stream had failed)."""
        return self._truncated

    @property
    def last_data(self) -> bytes | None:
        """Data of the most recent data event other than [DONE], or None."""
        return self._last_data

    @property
    def first_t(self) -> float:
        """observe(): time.monotonic() when data events first completed (0.0: never)."""
        return self._first_t

    @property
    def last_t(self) -> float:
        """observe(): time.monotonic() when data events last completed (0.0: never)."""
        return self._last_t

    def usage(self) -> tuple | None:
        """usage_counts(last_data): (input tokens, output tokens) or None."""
        d = self._last_data
        return None if d is None else usage_counts(d)

    # --- feeding --------------------------------------------------------------------

    def observe(self, data) -> int:
        """Consume the next piece(s) without returning the events (the native scanner then
        skips making bytes per event).

        ``data`` is one bytes-like piece or a list/tuple of items fed in order: an item is
        a bytes-like piece or an object with a bytes ``data`` attribute (an HTTP Data
        event); items without one are skipped. When a data event (``[DONE]`` included)
        completed, time.monotonic() is read once: ``first_t`` keeps the first reading,
        ``last_t`` the latest.

        Returns:
            the number of data events completed.
        Raises:
            as feed().
        """
        before = self._data_events
        if type(data) is list or type(data) is tuple:
            for piece in data:
                if not isinstance(piece, (bytes, bytearray, memoryview)):
                    piece = getattr(piece, "data", None)
                    if piece is None:
                        continue
                self._feed(piece, "observe")
        else:
            self._feed(data, "observe")
        n = self._data_events - before
        if n:
            now = time.monotonic()
            if not self._first_t:
                self._first_t = now
            self._last_t = now
        return n

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume the next piece of the stream.

        Returns:
            the data value of every event this piece completed, in order.
        Raises:
            TypeError: data is not bytes, bytearray or memoryview.
            RemoteProtocolError: (status_hint 502) an event exceeded max_event_size, or an
                earlier call raised. Any other exception is a bug.
        """
        return self._feed(data, "feed")

    def _feed(self, data, who: str) -> list[bytes]:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"SSEScanner.{who}() needs bytes, bytearray or memoryview, "
                    f"not {type(data).__name__}"
                )
            data = bytes(data)
        if self._failed:
            raise RemoteProtocolError(
                "SSE stream already failed; further input is refused", status_hint=502
            )
        if self._eof:
            return []
        self._bytes_seen += len(data)
        try:
            return self._scan(data)
        except BaseException:
            self._failed = True
            raise

    def feed_eof(self) -> list[bytes]:
        """End of stream. An unfinished event is dropped (WHATWG SSE) and noted in `truncated`.

        Returns:
            [] always (events complete at their blank line, inside feed()).
        """
        if self._eof:
            return []
        self._eof = True
        self._truncated = bool(
            self._failed
            or self._line
            or self._ev_lines
            or (self._at_start and self._bom_held > 0)
        )
        self._line = bytearray()
        self._parts = []
        self._ev_lines = False
        self._ev_size = 0
        self._bom_held = 0
        return []

    # --- internals ------------------------------------------------------------------

    def _scan(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._at_start:
            # Hold back up to two bytes that may still turn out to be a BOM.
            held = self._bom_held
            pos = 0
            n = len(data)
            while pos < n and held < 3 and data[pos] == _BOM[held]:
                pos += 1
                held += 1
            if held == 3:
                self._at_start = False  # a BOM: dropped
                self._bom_held = 0
            elif pos == n:
                self._bom_held = held
                return out  # still undecided
            else:
                # Not a BOM: the held bytes start the first line (they hold no CR/LF).
                self._line += _BOM[:held]
                self._at_start = False
                self._bom_held = 0
            if pos:
                data = data[pos:]

        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == _LF:
                data = data[1:]
        if b"\r" in data:
            if data[-1] == _CR:
                self._skip_lf = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        n = len(data)
        pos = 0
        line = self._line
        if line:
            k = data.find(b"\n")
            if k < 0:
                if len(line) + n > self._max - self._ev_size:
                    self._too_big()
                line += data
                return out
            line += data[:k]
            whole = bytes(line)
            self._line = line = bytearray()
            self._on_line(whole, out)
            pos = k + 1

        limit = self._max
        whole_events = True  # False once no b"\n\n" is left in this piece
        while pos < n:
            if whole_events and not self._ev_lines:
                if data[pos] == _LF:
                    pos += 1  # blank line with no event pending: nothing to complete
                    continue
                e = data.find(b"\n\n", pos)
                if e < 0:
                    whole_events = False
                    continue
                # data[pos:e] is one whole event made of non-blank lines.
                if data.startswith(b"data:", pos) and data.find(b"\n", pos, e) < 0:
                    # Fast path: a single `data:` line.
                    if e - pos > limit:
                        self._too_big()
                    v = pos + 6 if pos + 5 < e and data[pos + 5] == _SPACE else pos + 5
                    self._emit(data[v:e], out)
                    self._events += 1
                else:
                    for ln in data[pos:e].split(b"\n"):
                        self._on_line(ln, out)
                    self._dispatch(out)
                pos = e + 2
                continue
            k = data.find(b"\n", pos)
            if k < 0:
                break
            self._on_line(data[pos:k], out)
            pos = k + 1

        if pos < n:
            # Unterminated tail: check the limit before keeping it.
            if n - pos > self._max - self._ev_size:
                self._too_big()
            line += memoryview(data)[pos:]
        return out

    def _on_line(self, ln: bytes, out: list[bytes]) -> None:
        # One complete line, terminator excluded.
        if not ln:
            if self._ev_lines:
                self._dispatch(out)
            return
        self._ev_lines = True
        if len(ln) > self._max - self._ev_size:
            self._too_big()
        self._ev_size += len(ln)
        # The field name is everything before the first colon, so it is exactly "data"
        # iff the line starts with "data:" or is the bare word "data" (empty value).
        if ln.startswith(b"data:"):
            self._parts.append(ln[6:] if len(ln) > 5 and ln[5] == _SPACE else ln[5:])
        elif ln == b"data":
            self._parts.append(b"")
        # anything else is a comment (leading colon) or a field we do not observe

    def _dispatch(self, out: list[bytes]) -> None:
        self._events += 1
        parts = self._parts
        if parts:
            self._parts = []
            self._emit(parts[0] if len(parts) == 1 else b"\n".join(parts), out)
        self._ev_lines = False
        self._ev_size = 0

    def _emit(self, d: bytes, out: list[bytes]) -> None:
        self._data_events += 1
        out.append(d)
        if d == _DONE:
            self._done = True
        else:
            self._last_data = d

    def _too_big(self) -> None:
        raise RemoteProtocolError(
            f"SSE event larger than max_event_size ({self._max} bytes)", status_hint=502
        )


# -- token usage -------------------------------------------------------------------------
# The gateway counts tokens from the ``usage`` object of an answer (OpenAI, Anthropic) or
# SGLang's ``meta_info``, in a whole JSON body or the last SSE data event. Only two
# numbers are wanted, so they are found, not parsed: the last ``"usage"`` key (else the
# last ``"meta_info"``), then after it the first ``"prompt_tokens"`` (else
# ``"input_tokens"``) and ``"completion_tokens"`` (else ``"output_tokens"``), each
# followed by optional whitespace, a colon, optional whitespace and 1 to 18 digits.

_USAGE_ANCHORS = (b'"usage"', b'"meta_info"')
USAGE_INPUT_KEYS = (b'"prompt_tokens"', b'"input_tokens"')
USAGE_OUTPUT_KEYS = (b'"completion_tokens"', b'"output_tokens"')
_WS = b" \t\r\n"
MAX_COUNT_DIGITS = 18


def _count_after(data: bytes, start: int, keys: tuple):
    n = len(data)
    for k in keys:
        i = data.find(k, start)
        if i < 0:
            continue
        j = i + len(k)
        while j < n and data[j] in _WS:
            j += 1
        if j >= n or data[j] != 0x3A:  # ':'
            continue
        j += 1
        while j < n and data[j] in _WS:
            j += 1
        e = j
        while e < n and 0x30 <= data[e] <= 0x39:
            e += 1
        if e == j or e - j > MAX_COUNT_DIGITS:
            continue
        return int(data[j:e])
    return None


def usage_counts(data) -> tuple | None:
    """(input tokens, output tokens) named in ``data``, or None when it names neither.

    Raises:
        TypeError: ``data`` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("usage_counts() takes bytes-like data")
    data = bytes(data)
    start = -1
    for anchor in _USAGE_ANCHORS:
        start = data.rfind(anchor)
        if start >= 0:
            break
    if start < 0:
        return None
    i = _count_after(data, start, USAGE_INPUT_KEYS)
    o = _count_after(data, start, USAGE_OUTPUT_KEYS)
    if i is None and o is None:
        return None
    return (i or 0, o or 0)


# -- stream end ----------------------------------------------------------------------------
# StreamEnd watches a streamed (SSE) answer of a generative endpoint for its end; the
# exchange puts it first among the response transforms (smg/server/transforms.py).
# Rules (the native class, smg._native.sse.StreamEnd, keeps the same ones):
# - ``finished``: a Data event carried a non-null ``"finish_reason":`` (a string or an
#   object after optional spaces; OpenAI family) or ``message_stop`` (Anthropic family).
#   Each Data event is searched on its own, up to and including the one with [DONE]
#   (all of it, bytes after the cut too); a marker split across two events is not seen.
# - ``done``: a Data event held a ``data: [DONE]`` (or ``data:[DONE]``) that starts a
#   line (the event's first byte, or after an LF). That event is cut after the blank
#   line (``\n\n``) that follows it, or kept whole when there is none; every later Data
#   event, in this batch and all later ones, is dropped. Other events always pass.
# - ``complete`` = done or finished: the exchange adds an error event to a stream that
#   ends without it (transforms.error_event).
# - ``__call__(events)`` returns None when the batch passes unchanged (no [DONE] in it,
#   none before), else a new list; a cut event is a new Data holding bytes.
# - A Data payload that is not bytes (bytearray, memoryview) is read as bytes.

_FINISH = b'"finish_reason":'
_NON_NULL = (34, 123)  # a finish_reason value that starts a string or an object
_MESSAGE_STOP = b"message_stop"


def _done_at(d: bytes) -> int:
    """Where a ``data: [DONE]`` (or ``data:[DONE]``) line starts in ``d``, or -1. One
    search for ``[DONE]`` per chunk; the prefix is checked only where it was found."""
    j = d.find(_DONE)
    while j >= 0:
        if j >= 6 and d[j - 6:j] == b"data: ":
            s = j - 6
        elif j >= 5 and d[j - 5:j] == b"data:":
            s = j - 5
        else:
            s = -1
        if s == 0 or (s > 0 and d[s - 1] == _LF):
            return s
        j = d.find(_DONE, j + 6)
    return -1


def _finished_openai(d: bytes) -> bool:
    """Whether ``d`` carries a non-null ``finish_reason`` (a string or an object):
    one search per occurrence, which streamed chunks carry once (``null`` until the end)."""
    j = d.find(_FINISH)
    n = len(d)
    while j >= 0:
        k = j + 16
        while k < n and d[k] == _SPACE:
            k += 1
        if k < n and d[k] in _NON_NULL:
            return True
        j = d.find(_FINISH, k)
    return False


def _finished_anthropic(d: bytes) -> bool:
    return _MESSAGE_STOP in d


class StreamEnd:
    """Watches an SSE answer for its end: ``done`` ([DONE] seen; later bytes are
    dropped), ``finished`` (a finish reason / message_stop seen)."""

    __slots__ = ("done", "finished", "_finish_in")

    def __init__(self, anthropic: bool) -> None:
        self.done = False
        self.finished = False
        self._finish_in = _finished_anthropic if anthropic else _finished_openai

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    def __call__(self, events: list) -> list | None:
        if type(events) is not list:
            raise TypeError(f"StreamEnd() takes a list of events, not {type(events).__name__}")
        if self.done:
            return [ev for ev in events if type(ev) is not Data]
        for i, ev in enumerate(events):
            if type(ev) is not Data:
                continue
            d = ev.data
            if type(d) is not bytes:
                d = bytes(memoryview(d))
            if not self.finished and self._finish_in(d):
                self.finished = True
            j = _done_at(d)
            if j < 0:
                continue
            self.done = True
            e = d.find(b"\n\n", j)
            cut = e + 2 if e >= 0 else len(d)
            out = events[:i]
            out.append(ev if cut >= len(d) else Data(d[:cut]))
            out.extend(x for x in events[i + 1:] if type(x) is not Data)
            return out
        return None
