"""SGLang's prefill/decode rendezvous in the JSON body, and the logprob merge (no I/O).

Rules:
- Both halves of a pair get the same body: the client's, plus ``bootstrap_host`` (the
  prefill worker's host, from its URL), ``bootstrap_port`` (its configured bootstrap
  port, or null) and ``bootstrap_room`` (a random integer in ``[0, 2^63 - 1]``). A
  batched ``/generate`` (``text`` a list, or ``input_ids`` a list of lists) gets each
  field as an array of the batch's length, a fresh room per element.
- ``wants_logprobs``: a ``/generate`` asking ``return_logprob`` gets prefill's
  ``meta_info.input_token_logprobs`` put in front of decode's (the prompt's logprobs
  are computed where the prompt ran), in a whole answer and in each SSE event; a batch
  element by element. An answer or event that is not the expected JSON passes as it
  came.
"""
from __future__ import annotations

import random

import orjson

_rooms = random.Random()
ROOM_MAX = (1 << 63) - 1
_GENERATE = b"/generate"


def new_room() -> int:
    return _rooms.getrandbits(63)


def batch_size(body: dict, path: bytes) -> int | None:
    """The number of prompts of a batched ``/generate`` body, or None (one request)."""
    if path != _GENERATE:
        return None
    text = body.get("text")
    if type(text) is list:
        return len(text)
    ids = body.get("input_ids")
    if type(ids) is list and ids and type(ids[0]) is list:
        return len(ids)
    return None


def inject(body: dict, path: bytes, host: str, port: int | None) -> dict:
    """The body both halves of the pair get (a new dict; ``body`` is left as it is)."""
    n = batch_size(body, path)
    if n is None:
        return dict(body, bootstrap_host=host, bootstrap_port=port, bootstrap_room=new_room())
    return dict(body, bootstrap_host=[host] * n, bootstrap_port=[port] * n,
                bootstrap_room=[new_room() for _ in range(n)])


def wants_logprobs(body: dict, path: bytes) -> bool:
    return path == _GENERATE and body.get("return_logprob") is True


def _prefill_logprobs(doc) -> list | None:
    """Per element, the prefill answer's ``input_token_logprobs`` (None: not found)."""
    items = doc if type(doc) is list else [doc]
    out = []
    for item in items:
        meta = item.get("meta_info") if type(item) is dict else None
        lp = meta.get("input_token_logprobs") if type(meta) is dict else None
        out.append(lp if type(lp) is list else None)
    return out


def prefill_logprobs(raw: bytes) -> list | None:
    """From prefill's answer (a JSON body, or SSE events whose first ``data:`` holds
    them): its input logprobs per element, or None."""
    raw = raw.strip()
    if raw.startswith(b"data:"):
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    raw = payload
                    break
    try:
        return _prefill_logprobs(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


def merge_doc(doc, prefill: list) -> bool:
    """Prepends ``prefill``'s logprobs to ``doc``'s (in place); False when ``doc`` does
    not have the expected shape."""
    items = doc if type(doc) is list else [doc]
    changed = False
    for i, item in enumerate(items):
        lp = prefill[i] if i < len(prefill) else (prefill[0] if len(prefill) == 1 else None)
        meta = item.get("meta_info") if type(item) is dict else None
        if lp is None or type(meta) is not dict:
            continue
        own = meta.get("input_token_logprobs")
        meta["input_token_logprobs"] = lp + (own if type(own) is list else [])
        changed = True
    return changed


def merge_body(raw: bytes, prefill: list | None) -> bytes | None:
    """Decode's whole answer with prefill's logprobs merged (None: unchanged)."""
    if not prefill:
        return None
    out = merge_event(raw, prefill)
    return None if out is raw else out


def merge_event(payload: bytes, prefill: list) -> bytes:
    """One SSE ``data:`` payload with prefill's logprobs merged (as it came if not JSON)."""
    if payload == b"[DONE]":
        return payload
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    return orjson.dumps(doc) if merge_doc(doc, prefill) else payload


# -- vLLM's KV-transfer handoff (sequential: prefill first, then decode) ----------------

VLLM = "vllm"
_VLLM_PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False}


def vllm_prefill(body: dict) -> dict:
    """Prefill's copy of the request: one token, not streamed, asking for a remote decode."""
    b = dict(body, max_tokens=1, stream=False, kv_transfer_params=dict(_VLLM_PREFILL_PARAMS))
    b.pop("stream_options", None)
    if "max_completion_tokens" in b:
        b["max_completion_tokens"] = 1
    if "n" in b:
        b["n"] = 1
    return b


def vllm_decode(body: dict, prefill_answer: bytes) -> dict:
    """Decode's request: the client's, with the ``kv_transfer_params`` prefill returned
    (the client's as they were when prefill returned none)."""
    try:
        doc = orjson.loads(prefill_answer)
    except orjson.JSONDecodeError:
        return body
    params = doc.get("kv_transfer_params") if type(doc) is dict else None
    return dict(body, kv_transfer_params=params) if type(params) is dict else body
