"""The generation endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/generate``, ``/v1/messages``.

Rules:
- This is the hot path of every gateway benchmark: flat code, no per-request
  rendering. The answer is the template for (kind, model, prompt size, stream,
  include_usage) (``templates.py``), rendered on first use; a request adds its id
  (``w._id_prefix`` + a 10-digit counter) and its own header lines (``conn.extra``).
- With the worker ``_plain`` (no failure injection, no delay) the answer is written
  inline; otherwise failure injection (``failures.py``) runs first, then the delays
  (``streaming.py``).
- A body that is not a JSON object is a 400 (Anthropic-shaped on ``/v1/messages``);
  the last body and headers are recorded in the stats either way.
- ``/generate`` with a list ``text`` is a batch: one result per prompt, never streamed,
  no failure injection.
"""
from __future__ import annotations

import asyncio
from typing import Any

import orjson

from smg.http1.events import Request
from smg.testing.mock_worker.failures import choose, inflict
from smg.testing.mock_worker.streaming import delayed, start_stream
from smg.testing.mock_worker.templates import (K_CHAT, K_COMPLETION, K_GENERATE, K_MESSAGES, generate_result,
                                               prompt_tokens, tokens)
from smg.testing.mock_worker.wire import END_OF_HEAD

_loads = orjson.loads


def generation(conn: Any, req: Request, body: bytes, kind: int) -> None:
    w = conn.w
    st = w.stats
    st._raw_headers = req.headers
    try:
        obj = _loads(body)
    except ValueError:
        st.last_body = None
        conn.error(400, "request body is not valid JSON", kind == K_MESSAGES)
        return
    st.last_body = obj
    if type(obj) is not dict:
        conn.error(400, "request body must be a JSON object", kind == K_MESSAGES)
        return
    model = obj.get("model")
    if type(model) is not str:
        model = w.config.model
    stream = obj.get("stream") is True
    usage = False
    if stream:
        so = obj.get("stream_options")
        usage = type(so) is dict and so.get("include_usage") is True
    elif kind == K_GENERATE and type(obj.get("text")) is list:
        _generate_batch(conn, obj, body)
        return
    key = (kind, model, len(body) >> 2, stream, usage)  # prompt size: see templates.prompt_tokens
    tmpl = w._templates.get(key)
    if tmpl is None:
        tmpl = w._template(key)
    w._counter = n = w._counter + 1
    idb = w._id_prefix + b"%010d" % (n % 10_000_000_000)
    if w._plain:
        if stream:
            start_stream(conn, tmpl, idb)
            return
        head, parts = tmpl
        conn.transport.write(b"".join((head, conn.extra, END_OF_HEAD, idb.join(parts))))
        if not conn.keep:
            conn.transport.close()
        return
    cfg = w.config
    if cfg.fail_status is not None or cfg.fail_mode is not None:
        mode = choose(conn)
        if mode is not None:
            inflict(conn, mode, kind == K_MESSAGES, tmpl)
            return
    if stream:
        start_stream(conn, tmpl, idb)
    elif cfg.ttft or cfg.token_delay:
        conn.begin(False)
        conn.task = asyncio.get_running_loop().create_task(
            delayed(conn, tmpl, idb, conn.extra, cfg.ttft + cfg.token_delay * cfg.num_chunks))
    else:
        head, parts = tmpl
        conn.transport.write(b"".join((head, conn.extra, END_OF_HEAD, idb.join(parts))))
        if not conn.keep:
            conn.transport.close()


def chat(conn: Any, req: Request, body: bytes) -> None:
    generation(conn, req, body, K_CHAT)


def completions(conn: Any, req: Request, body: bytes) -> None:
    generation(conn, req, body, K_COMPLETION)


def generate(conn: Any, req: Request, body: bytes) -> None:
    generation(conn, req, body, K_GENERATE)


def messages(conn: Any, req: Request, body: bytes) -> None:
    generation(conn, req, body, K_MESSAGES)


def _generate_batch(conn: Any, obj: dict, body: bytes) -> None:
    toks = tokens(conn.w.config.num_chunks)
    n = len(obj["text"])
    out = [generate_result(toks, prompt_tokens(body) // max(n, 1) or 1) for _ in range(n)]
    for r in out:
        r["meta_info"]["id"] = conn.w._next_id().decode()
    conn.json(out)
