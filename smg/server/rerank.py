"""Rerank: the two rerank routes are answered by the gateway around one worker call.

Both ``POST /rerank`` and ``POST /v1/rerank`` reach the worker as ``POST /v1/rerank``
with the gateway's rerank request, and the worker's list of results comes back wrapped
in the gateway's rerank object.

Rules:
- The worker's request is rebuilt from the validated body, in this field order:
  ``query``, ``documents``, ``model``, ``top_k`` (only when given), ``return_documents``
  (default true), ``rid``, ``user``; any other field is dropped. ``/v1/rerank`` takes
  only ``query`` and ``documents``: the worker gets ``model: "unknown"``, and routing
  sees no model (any worker may answer).
- A successful (2xx) worker answer that is a JSON list becomes
  ``{"results", "model", "usage": null, "object": "rerank", "id", "created"}``:
  ``results`` the worker's items sorted by score (highest first), cut to ``top_k``,
  each as ``score`` (a 32-bit float), ``document`` (when present and
  ``return_documents``), ``index``, ``meta_info`` (when present); ``model`` the
  request's model, ``id`` its ``rid``, ``created`` the Unix time. Any other answer (an
  error status, a body that is no list of scored items) is relayed as the worker sent
  it.
- The conversion is one JSON decode and one encode per rerank request; nothing here
  runs for other routes.
"""
from __future__ import annotations

import struct
import time

import orjson

WORKER_TARGET = b"/v1/rerank"
V1_MODEL = "unknown"

_ITEM_KEYS = ("score", "document", "index", "meta_info")
_F32 = struct.Struct("<f")


def worker_request(body: dict, v1: bool) -> dict:
    """The request the worker gets for a validated ``body``."""
    out = {"query": body["query"], "documents": body["documents"]}
    if v1:
        out["model"] = V1_MODEL
        out["return_documents"] = True
        out["rid"] = None
        out["user"] = None
        return out
    out["model"] = body["model"]
    top_k = body.get("top_k")
    if top_k is not None:
        out["top_k"] = top_k
    rd = body.get("return_documents")
    out["return_documents"] = True if rd is None else rd
    out["rid"] = body.get("rid")
    out["user"] = body.get("user")
    return out


def prepare(ctx, v1: bool) -> None:
    """Rewrites ``ctx`` (after validation) into the worker's request: ``ctx.raw`` and
    ``ctx.target``; for ``/v1/rerank`` ``ctx.body`` keeps no model, so selection routes
    on none."""
    req = worker_request(ctx.body, v1)
    ctx.raw = orjson.dumps(req)
    ctx.target = WORKER_TARGET
    if v1:
        ctx.body = {"query": req["query"], "documents": req["documents"]}
    else:
        ctx.body = req


def _f32(x):
    """``x`` as the gateway's scores are kept: a 32-bit float, written with the
    fewest digits that read back as it."""
    if type(x) is not float:
        return x
    try:
        (r,) = _F32.unpack(_F32.pack(x))
    except OverflowError:
        return x
    for digits in range(1, 10):
        y = float("%.*g" % (digits, r))
        if _F32.unpack(_F32.pack(y))[0] == r:
            return y
    return r


def _item(x: dict, keep_document: bool) -> dict:
    out = {}
    for k in _ITEM_KEYS:
        v = x.get(k)
        if v is not None and (keep_document or k != "document"):
            out[k] = _f32(v) if k == "score" else v
    return out


def _score(x: dict) -> float:
    return x["score"]


def wrap(raw: bytes, model: str, rid, top_k, keep_documents: bool) -> bytes | None:
    """The gateway's rerank object for a worker answer ``raw``, or None when the answer
    is not a list of results with numeric scores (relayed unchanged)."""
    try:
        results = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(results) is not list:
        return None
    for x in results:
        if type(x) is not dict or type(x.get("score")) not in (int, float):
            return None
    results.sort(key=_score, reverse=True)
    if top_k is not None:
        del results[top_k:]
    return orjson.dumps({"results": [_item(x, keep_documents) for x in results], "model": model, "usage": None,
                         "object": "rerank", "id": rid, "created": int(time.time())})


def reshaper(ctx, v1: bool):
    """``f(raw) -> bytes | None`` rewrapping this request's worker answer (``ctx.body``
    is the worker's request ``prepare`` made)."""
    if v1:
        return lambda raw: wrap(raw, V1_MODEL, None, None, True)
    body = ctx.body
    model, rid, top_k, keep = body["model"], body["rid"], body.get("top_k"), body["return_documents"]
    return lambda raw: wrap(raw, model, rid, top_k, keep)
