"""The reasoning and tool-call parsers on chat answers of HTTP workers (an opt-in:
``--http-parse-output``, or the worker label ``parse_output`` ``"true"``/``"false"``,
which wins): for servers that return the model's raw text, such as llama.cpp's without
``--jinja`` or a plain OpenAI-compatible server.

The worker's ``parse_output`` (kept by the manager from the label and the flag, so the
common path pays one attribute read) says whether to look; ``for_request`` then decides
once per request: None (the answer is relayed untouched) or the ``Parsers`` (smg/generation/parsing.py)
chosen as on the gRPC path (model card → worker labels → ``--reasoning-parser`` /
``--tool-call-parser`` → the model-name map). Two consumers:

- ``reshaper(parsers)``: a whole ``chat.completion`` body (the exchange's reshape hook,
  which reads a 2xx non-SSE answer whole): each choice's ``message.content`` is parsed
  in complete mode into ``content``, ``reasoning_content`` and ``tool_calls``.
- ``StreamParsing``: a response transform on an SSE answer; it re-frames the worker's
  events with an ``SSEScanner`` and rewrites each ``chat.completion.chunk``: a choice's
  ``delta.content`` goes through that choice's streaming parsers and the delta carries
  what they release (``reasoning_content``, ``content``, ``tool_calls``); a chunk with a
  ``finish_reason`` first gets the parsers' tail.

Rules:
- A choice that made a call and finished with ``"stop"`` finishes with ``"tool_calls"``
  (the gRPC path's rule, and SGLang's).
- A worker's own ``reasoning_content``/``tool_calls`` are kept as they came (a server
  that parses itself needs no opt-in; nothing is dropped when both happen).
- Bytes that are not a JSON chat object (an error body, a comment, ``[DONE]``) pass
  unchanged; an SSE event past the scanner's size limit stops the rewriting and the rest
  of the stream is relayed as it comes.
- A chunk whose content the parsers hold back entirely (a partial marker) is not sent;
  its text goes out with a later chunk, so the concatenated deltas equal the whole
  answer's parse.
- Memory per stream: the parsers' hold-back per choice (bounded by the text fed).
"""
from __future__ import annotations

import logging

import orjson

from smg.errors import RemoteProtocolError
from smg.generation.parsing import pick
from smg.http1.events import Data
from smg.streaming.sse import SSEScanner

log = logging.getLogger("smg.parsers")

__all__ = ["for_request", "reshaper", "StreamParsing"]

_DONE = b"[DONE]"


def for_request(ctx, config):
    """The parsers of this chat request's answer from an HTTP worker whose
    ``parse_output`` is on (``Worker.set_parse_output``), or None (relayed untouched)."""
    w = ctx.worker
    body = ctx.body
    if type(body) is not dict:
        return None
    model = body.get("model") if type(body.get("model")) is str else ctx.model
    card = next((c for c in w.model_cards if c.get("id") == model), None)
    return pick(body, model, card, w.spec.get("labels"), config.reasoning_parser, config.tool_call_parser)


def _apply(target: dict, field: str, text: str, reasoning: str, calls: list) -> None:
    """Puts a parse result into a message or delta (``field``: where the text was)."""
    if reasoning:
        target["reasoning_content"] = (target.get("reasoning_content") or "") + reasoning
    if calls:
        target["tool_calls"] = list(target.get("tool_calls") or ()) + calls
    target[field] = text


def reshaper(parsers):
    """The exchange's reshape hook for a whole chat answer (None: the body unchanged)."""

    def reshape(raw: bytes):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict or type(obj.get("choices")) is not list:
            return None
        for choice in obj["choices"]:
            msg = choice.get("message") if type(choice) is dict else None
            if type(msg) is not dict or type(msg.get("content")) is not str:
                continue
            p = parsers.choice(whole=True)
            p.feed(msg["content"])
            text, reasoning, calls = p.finish()
            for c in calls:
                del c["index"]
            _apply(msg, "content", text, reasoning, calls)
            if calls and not text:
                msg["content"] = None
            if p.called and choice.get("finish_reason") == "stop":
                choice["finish_reason"] = "tool_calls"
        return orjson.dumps(obj)

    return reshape


class StreamParsing:
    """The response transform of a parsed SSE chat answer (module rules)."""

    __slots__ = ("parsers", "scanner", "choices", "passing", "last")

    def __init__(self, parsers) -> None:
        self.parsers = parsers
        self.scanner = SSEScanner()
        self.choices: dict = {}   # choice index -> OutputParsing
        self.passing = False
        self.last = None          # the last chunk's id, object, created and model

    def __call__(self, events: list):
        if self.passing:
            return None
        out = []
        for ev in events:
            if type(ev) is not Data:
                out.append(ev)
                continue
            try:
                payloads = self.scanner.feed(ev.data)
            except RemoteProtocolError as e:
                log.info("stream no longer parsed: %s", e)
                self.passing = True
                out.append(ev)
                continue
            for payload in payloads:
                if payload == _DONE:
                    self._tails(out)
                    out.append(Data(b"data: [DONE]\n\n"))
                    continue
                data = self._rewrite(payload)
                if data is not None:
                    out.append(Data(b"data: " + data + b"\n\n"))
        return out

    def _tails(self, out: list) -> None:
        """The parsers' tails of choices the worker never finished, before ``[DONE]``."""
        for idx, p in list(self.choices.items()):
            content, reasoning, calls = p.finish()
            if self.last is None or not (content or reasoning or calls):
                continue
            delta: dict = {}
            _apply(delta, "content", content, reasoning, calls)
            if not content:
                del delta["content"]
            out.append(Data(b"data: " + orjson.dumps({**self.last, "choices": [
                {"index": idx, "delta": delta, "finish_reason": None}]}) + b"\n\n"))
        self.choices.clear()

    def _rewrite(self, payload: bytes):
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        choices = obj.get("choices") if type(obj) is dict else None
        if type(choices) is not list or not choices:
            return payload
        self.last = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        held = 0   # choices whose text the parsers held back entirely, nothing else in the delta
        for choice in choices:
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is not dict:
                continue
            idx = choice.get("index", 0)
            p = self.choices.get(idx)
            if p is None:
                p = self.choices[idx] = self.parsers.choice()
            text = delta.get("content")
            had_text = type(text) is str and text != ""
            content, reasoning, calls = p.feed(text) if had_text else ("", "", [])
            reason = choice.get("finish_reason")
            if reason is not None:
                more, more_reasoning, more_calls = p.finish()
                content += more
                reasoning += more_reasoning
                calls += more_calls
                if p.called and reason == "stop":
                    choice["finish_reason"] = "tool_calls"
                del self.choices[idx]
            if not (had_text or content or reasoning or calls):
                continue   # a role or finish delta without text: as it came
            if had_text and not (content or reasoning or calls) and reason is None and len(delta) == 1:
                held += 1
            _apply(delta, "content", content, reasoning, calls)
            if not content and "role" not in delta:
                del delta["content"]
        if held == len(choices) and not obj.get("usage"):
            return None
        return orjson.dumps(obj)
