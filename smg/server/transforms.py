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
- A streamed (SSE) answer of a generative endpoint always gets ``StreamEnd`` (from
  smg.streaming.sse; its rules are in smg/streaming/sse_py.py, "stream end"): nothing
  after the worker's ``data: [DONE]`` reaches the client, and it tells the exchange
  whether the stream ended properly (``complete``). A stream that ends without it gets
  exactly one error event in the API's own shape (``error_event``): OpenAI
  ``data: {"error": {...}}``, Anthropic ``event: error``.
"""
from __future__ import annotations

import logging

import orjson

from smg.api.errors import ANTHROPIC
from smg.errors import RemoteProtocolError
from smg.streaming.sse import SSEScanner, StreamEnd

log = logging.getLogger("smg.transforms")


def error_event(family: int, message: str) -> bytes:
    """One SSE error event in the API family's shape (the stream ends after it)."""
    if family == ANTHROPIC:
        return b"event: error\ndata: " + orjson.dumps(
            {"type": "error", "error": {"type": "api_error", "message": message}}) + b"\n\n"
    return b"data: " + orjson.dumps(
        {"error": {"message": message, "type": "stream_error", "code": "upstream_error"}}) + b"\n\n"


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
        end = StreamEnd(ctx.family == ANTHROPIC)
        return ((end, SSEObserver(ctx)) if observe else (end,)), end
    if observe and 0 <= content_length <= usage_limit and status == 200:
        ctx.body_parts = []
    return (), None
