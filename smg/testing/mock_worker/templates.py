"""Generation answers rendered once into byte templates (chat, completions, generate, messages).

Rules:
- An answer depends only on (endpoint kind, model, prompt size, stream, include_usage)
  and the config; it is rendered once per such key, and each request only joins its
  id into it. The per-request id goes where ``PH`` is: a fixed-width placeholder of
  ``ID_LEN`` ASCII bytes, so Content-Length and chunk sizes stay right after the join.
- A non-streaming template is ``(head, parts)``: head is open (``wire.open_head``), the
  body is ``id.join(parts)``. A stream template is ``(head, frames, kinds)``: frames are
  chunk-framed SSE events split on the placeholder; ``kinds[i]`` is True for a content
  token (``token_delay`` applies between those).
- The text is always the first ``num_chunks`` words of ``WORDS`` (cycled); token
  counts are exact for the completion and a cheap estimate for the prompt
  (``prompt_tokens``).
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from smg.http1.writer import chunk
from smg.testing.mock_worker.config import MockConfig
from smg.testing.mock_worker.wire import open_head

# Per-request ids are 16 ASCII chars: 6 hex chars per worker instance + a 10-digit counter.
ID_LEN = 16
PH = "@@mock@id@slot@@"
PHB = PH.encode()
assert len(PH) == ID_LEN

WORDS = ("Hello", " from", " the", " smg", " mock", " worker", ".", " This", " is", " token",
         " text", " for", " testing", " gateways", ",", " nothing", " more", "!")

K_CHAT, K_COMPLETION, K_GENERATE, K_MESSAGES = range(4)

_dumps = orjson.dumps


def tokens(n: int) -> list:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def prompt_tokens(body: bytes) -> int:
    """A rough prompt size (4 bytes of request JSON per token): cheap and deterministic."""
    return max(1, len(body) >> 2)


def sse(obj: Any, event: str | None = None) -> bytes:
    """One SSE event: ``obj`` as JSON, or ``[DONE]`` for None."""
    data = b"[DONE]" if obj is None else _dumps(obj)
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def canned(wid: bytes, body: bytes, status: int = 200) -> tuple:
    """A non-streaming JSON template ``(head, parts)``."""
    head = open_head(status, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                              (b"x-mock-worker", wid)])
    return head, body.split(PHB)


def stream(wid: bytes, events: list) -> tuple:
    """A stream template ``(head, frames, kinds)`` from ``(sse bytes, is_token)`` pairs."""
    head = open_head(200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                           (b"transfer-encoding", b"chunked"), (b"x-mock-worker", wid)])
    frames = [chunk(ev).split(PHB) for ev, _ in events]
    kinds = [tok for _, tok in events]
    return head, frames, kinds


def _usage(p: int, k: int) -> dict:
    return {"prompt_tokens": p, "completion_tokens": k, "total_tokens": p + k}


def build_chat(cfg: MockConfig, wid: bytes, model: str, p: int, is_stream: bool, usage: bool) -> tuple:
    created = int(time.time())
    toks = tokens(cfg.num_chunks)
    k = len(toks)
    rid = "chatcmpl-" + PH
    if not is_stream:
        return canned(wid, _dumps({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(toks)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(p, k),
        }))

    def ck(delta: dict, finish: str | None = None) -> dict:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [(sse(ck({"role": "assistant", "content": ""})), False)]
    events += [(sse(ck({"content": t})), True) for t in toks]
    events.append((sse(ck({}, "stop")), False))
    if usage:
        events.append((sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "usage": _usage(p, k)}), False))
    events.append((sse(None), False))
    return stream(wid, events)


def build_completion(cfg: MockConfig, wid: bytes, model: str, p: int, is_stream: bool, usage: bool) -> tuple:
    created = int(time.time())
    toks = tokens(cfg.num_chunks)
    k = len(toks)
    rid = "cmpl-" + PH
    if not is_stream:
        return canned(wid, _dumps({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": "".join(toks), "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(p, k),
        }))

    def ck(text: str, finish: str | None = None) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    events = [(sse(ck(t)), True) for t in toks]
    events.append((sse(ck("", "stop")), False))
    if usage:
        events.append((sse({"id": rid, "object": "text_completion", "created": created, "model": model,
                            "choices": [], "usage": _usage(p, k)}), False))
    events.append((sse(None), False))
    return stream(wid, events)


def generate_result(toks: list, p: int) -> dict:
    """One SGLang ``/generate`` result (its ``meta_info.id`` is the placeholder)."""
    return {"text": "".join(toks),
            "meta_info": {"id": PH, "prompt_tokens": p, "completion_tokens": len(toks),
                          "finish_reason": {"type": "stop"}}}


def build_generate(cfg: MockConfig, wid: bytes, model: str, p: int, is_stream: bool, usage: bool) -> tuple:
    toks = tokens(cfg.num_chunks)
    if not is_stream:
        return canned(wid, _dumps(generate_result(toks, p)))
    events = []
    n = len(toks)
    for i in range(n):  # SGLang streams the cumulative text
        events.append((sse({"text": "".join(toks[:i + 1]),
                            "meta_info": {"id": PH, "prompt_tokens": p, "completion_tokens": i + 1,
                                          "finish_reason": {"type": "stop"} if i == n - 1 else None}}), True))
    if n == 0:
        events.append((sse(generate_result([], p)), False))
    events.append((sse(None), False))
    return stream(wid, events)


def build_messages(cfg: MockConfig, wid: bytes, model: str, p: int, is_stream: bool, usage: bool) -> tuple:
    toks = tokens(cfg.num_chunks)
    mid = "msg_" + PH
    if not is_stream:
        return canned(wid, _dumps({
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "".join(toks)}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": p, "output_tokens": len(toks)},
        }))
    events = [
        (sse({"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": 1}}},
            "message_start"), False),
        (sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"), False),
    ]
    events += [(sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                    "content_block_delta"), True) for t in toks]
    events += [
        (sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
        (sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": {"output_tokens": len(toks)}}, "message_delta"), False),
        (sse({"type": "message_stop"}, "message_stop"), False),
    ]
    return stream(wid, events)


BUILDERS = {K_CHAT: build_chat, K_COMPLETION: build_completion, K_GENERATE: build_generate,
            K_MESSAGES: build_messages}
