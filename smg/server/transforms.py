"""Response transforms: what runs between an upstream leg's events and the sink.

A transform is a callable ``t(events)`` given each batch of head/data/end events
before they are relayed. It returns None to leave the batch as it is (an observer),
or a new list of events to relay instead (a rewriter: detokenization, tool-call and
reasoning parsers, API re-encoders plug in here). ``for_response`` picks a
response's transforms from its head, once.

Rules:
- Observing never changes a byte the client gets, and never fails the response: an
  observer that cannot go on (an SSE event over the scanner's size limit) stops
  observing and the answer is relayed to its end, untimed.
- What observers learn goes into the request context (``scanner``, ``body_parts``)
  for the observer (smg/observability/observer.py) to record at the end.
- A streamed (SSE) answer of a generative endpoint always gets ``StreamEnd``: after
  the worker's ``data: [DONE]`` nothing more reaches the client (bytes a worker sends
  after it are dropped), and it tells the exchange whether the stream ended properly
  (``[DONE]``, or a finish reason / ``message_stop``). A stream that ends without
  either gets exactly one error event in the API's own shape (``error_event``):
  OpenAI ``data: {"error": {...}}``, Anthropic ``event: error``.
"""
from __future__ import annotations

import logging

import orjson

from smg.api.errors import ANTHROPIC
from smg.errors import RemoteProtocolError
from smg.http1.events import Data
from smg.streaming.sse import SSEScanner

log = logging.getLogger("smg.transforms")

_DONE = b"[DONE]"
_FINISH = b'"finish_reason":'
_NON_NULL = (34, 123)  # a finish_reason value that starts a string or an object
_MESSAGE_STOP = b"message_stop"


def error_event(family: int, message: str) -> bytes:
    """One SSE error event in the API family's shape (the stream ends after it)."""
    if family == ANTHROPIC:
        return b"event: error\ndata: " + orjson.dumps(
            {"type": "error", "error": {"type": "api_error", "message": message}}) + b"\n\n"
    return b"data: " + orjson.dumps(
        {"error": {"message": message, "type": "stream_error", "code": "upstream_error"}}) + b"\n\n"


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
        if s == 0 or (s > 0 and d[s - 1] == 10):
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
        while k < n and d[k] == 32:
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

    __slots__ = ("done", "finished", "finish_in")

    def __init__(self, family: int) -> None:
        self.done = False
        self.finished = False
        self.finish_in = _finished_anthropic if family == ANTHROPIC else _finished_openai

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    def __call__(self, events: list):
        if self.done:
            return [ev for ev in events if type(ev) is not Data]
        for i, ev in enumerate(events):
            if type(ev) is not Data:
                continue
            d = ev.data
            if not self.finished and self.finish_in(d):
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


class SSEObserver:
    """Counts events and times the first and last of an SSE answer (TTFT/TPOT, usage)."""

    __slots__ = ("ctx", "scanner")

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.scanner = ctx.scanner = SSEScanner()

    def __call__(self, events: list) -> None:
        if self.scanner is None:
            return None
        # one native call per read, however many events it carried: the scanner takes
        # the Data events' payloads itself and keeps first/last event times and the
        # last data value
        try:
            self.scanner.observe(events)
        except RemoteProtocolError as e:
            log.info("request %s: stream no longer observed: %s", self.ctx.rid.decode(), e)
            self.scanner = self.ctx.scanner = None
        return None


def for_response(ctx, status: int, content_length: int, observe: bool, usage_limit: int) -> tuple:
    """The transforms of a response whose head was just received, and its StreamEnd
    (None unless it is a generative endpoint's SSE answer): ``(transforms, end)``.

    ``observe``: metrics or the access log want TTFT/TPOT and usage for this endpoint.
    A non-streamed answer of at most ``usage_limit`` bytes is kept (``ctx.body_parts``,
    filled by the exchange as it relays) for its ``usage`` to be read at the end.
    """
    if ctx.is_sse:
        if not ctx.endpoint.generative:
            return ((SSEObserver(ctx),) if observe else ()), None
        end = StreamEnd(ctx.family)
        return ((end, SSEObserver(ctx)) if observe else (end,)), end
    if observe and 0 <= content_length <= usage_limit and status == 200:
        ctx.body_parts = []
    return (), None
