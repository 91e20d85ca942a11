"""Every path the mock answers, and the route table; the generation paths live in ``generation.py``.

Rules:
- A handler is ``handler(conn, req, body)`` with ``conn`` the ``MockProtocol``; it
  answers exactly once (or hands the answer to a task, see ``protocol.py``).
- ``ROUTES`` maps a path (query string stripped) to ``{method: handler}``; the
  protocol answers an unknown path with 404 and a known one with another method with
  405 and ``Allow``.
- Embeddings and rerank are deterministic (``embedding``): the same input gives the
  same vector on every worker, so tests can compare workers.
- Info endpoints report what the worker really has: ``num_running_reqs`` is the
  number of answers in progress (``w._inflight``).
- ``/_mock/*`` is the admin surface: stats, config (GET; POST merges a JSON object),
  reset. It is not counted in the stats.

- Engine control routes answer as SGLang does: ``/flush_cache``, ``/start_profile``,
  ``/stop_profile`` a short plain-text line with 200, or, with ``admin_status`` other
  than 200, that status and a plain-text refusal; ``/health_generate`` an empty 200
  (``health_status`` otherwise).

Paths (GET unless said): ``/health``, ``/health_generate``, ``/liveness``,
``/readiness``; ``/v1/models``; ``/get_model_info`` and ``/model_info``;
``/get_server_info`` and ``/server_info``; ``/version``; ``/v1/loads``; ``/get_load``
(the legacy per-rank list); ``/metrics`` (SGLang- and vLLM-style gauges with their
``# HELP``/``# TYPE`` lines); POST ``/v1/chat/completions``, ``/v1/completions``,
``/generate``, ``/v1/embeddings``, ``/v1/classify``, ``/v1/rerank``, ``/rerank``,
``/v1/messages``, ``/v1/messages/count_tokens``, ``/flush_cache``, ``/start_profile``,
``/stop_profile``. Mock admin: GET ``/_mock/stats``, GET/POST ``/_mock/config``, POST
``/_mock/reset``.
"""
from __future__ import annotations

import base64
import math
import struct
import time
import zlib
from typing import Any

import orjson

from smg.http1.events import Request
from smg.testing.mock_worker import generation
from smg.testing.mock_worker.failures import choose, inflict
from smg.testing.mock_worker.templates import canned, prompt_tokens

_dumps = orjson.dumps
_loads = orjson.loads


def version() -> str:
    try:
        from smg._version import __version__
    except ImportError:  # pragma: no cover
        return "0"
    return __version__


def embedding(text: Any, dim: int) -> list:
    """A deterministic unit vector for ``text`` (same input → same vector on every worker)."""
    seed = zlib.crc32(text.encode() if isinstance(text, str) else _dumps(text)) or 1
    out = []
    for _ in range(dim):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(seed / 0x3FFFFFFF - 1.0)
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]


# -- inference endpoints other than generation (not on the benchmark's hot path)


def _inference_body(conn: Any, req: Request, body: bytes) -> Any:
    """Parses and records an inference request; None when it was answered (400)."""
    st = conn.w.stats
    st._raw_headers = req.headers
    try:
        obj = _loads(body)
    except ValueError:
        st.last_body = None
        conn.error(400, "request body is not valid JSON")
        return None
    st.last_body = obj
    if type(obj) is not dict:
        conn.error(400, "request body must be a JSON object")
        return None
    return obj


def _simple_inference(conn: Any, req: Request, body: bytes) -> Any:
    """The request object, or None when it was answered (a 400 or an injected failure)."""
    obj = _inference_body(conn, req, body)
    if obj is None:
        return None
    cfg = conn.w.config
    if cfg.fail_status is not None or cfg.fail_mode is not None:
        mode = choose(conn)
        if mode is not None:
            inflict(conn, mode, False, canned(conn.w._wid, _dumps({"error": "cut"})))
            return None
    return obj


def embeddings(conn: Any, req: Request, body: bytes) -> None:
    obj = _simple_inference(conn, req, body)
    if obj is None:
        return
    cfg = conn.w.config
    inp = obj.get("input")
    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        inputs = [inp]
    elif isinstance(inp, list) and inp:
        inputs = inp
    else:
        conn.error(400, "'input' must be a string, a list of strings or token ids")
        return
    dim = obj.get("dimensions") if isinstance(obj.get("dimensions"), int) else cfg.embedding_dim
    b64 = obj.get("encoding_format") == "base64"
    data = []
    for i, x in enumerate(inputs):
        vec = embedding(x, dim)
        emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    p = prompt_tokens(body)
    conn.json({"object": "list", "data": data, "model": obj.get("model") or cfg.model,
               "usage": {"prompt_tokens": p, "total_tokens": p}})


def rerank(conn: Any, req: Request, body: bytes) -> None:
    obj = _simple_inference(conn, req, body)
    if obj is None:
        return
    query = obj.get("query")
    docs = obj.get("documents")
    if not isinstance(query, str) or not isinstance(docs, list):
        conn.error(400, "rerank needs 'query' (string) and 'documents' (list)")
        return
    # SGLang's /v1/rerank shape: a list sorted by score, best first.
    qv = embedding(query, 8)
    out = []
    for i, d in enumerate(docs):
        text = d if isinstance(d, str) else _dumps(d).decode()
        score = sum(a * b for a, b in zip(qv, embedding(text, 8)))
        item = {"score": score, "index": i, "meta_info": {"id": conn.w._next_id().decode()}}
        if obj.get("return_documents", True):
            item["document"] = text
        out.append(item)
    out.sort(key=lambda r: -r["score"])
    top_n = obj.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        out = out[:top_n]
    conn.json(out)


def classify(conn: Any, req: Request, body: bytes) -> None:
    """SGLang's ``/v1/classify``: one ``{index, label, probs, num_classes}`` per input,
    probabilities deterministic in the input (a softmax over its embedding)."""
    obj = _simple_inference(conn, req, body)
    if obj is None:
        return
    inp = obj.get("input", obj.get("text"))
    if isinstance(inp, str):
        inputs = [inp]
    elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
        inputs = inp
    else:
        conn.error(400, "'input' must be a string or a list of strings")
        return
    n = conn.w.config.num_labels
    data = []
    for i, x in enumerate(inputs):
        exps = [math.exp(v) for v in embedding(x, n)]
        total = sum(exps)
        probs = [e / total for e in exps]
        best = max(range(n), key=probs.__getitem__)
        data.append({"index": i, "label": f"LABEL_{best}", "probs": probs, "num_classes": n})
    p = prompt_tokens(body)
    conn.json({"id": "classify-" + conn.w._next_id().decode(), "object": "list", "created": int(time.time()),
               "model": obj.get("model") or conn.w.config.model, "data": data,
               "usage": {"prompt_tokens": p, "total_tokens": p, "completion_tokens": 0}})


def count_tokens(conn: Any, req: Request, body: bytes) -> None:
    """Anthropic's ``/v1/messages/count_tokens``: ``{"input_tokens": n}``."""
    obj = _inference_body(conn, req, body)
    if obj is None:
        return
    if not isinstance(obj.get("messages"), list):
        conn.error(400, "messages: field required", anthropic=True)
        return
    conn.json({"input_tokens": prompt_tokens(body)})


# -- info endpoints


def health(conn: Any, req: Request, body: bytes) -> None:
    status = conn.w.config.health_status
    if status == 200:
        conn.respond(200, b"", ctype=b"text/plain")
    else:
        conn.error(status, "mock worker is unhealthy")


def liveness(conn: Any, req: Request, body: bytes) -> None:
    conn.respond(200, b"", ctype=b"text/plain")


def models(conn: Any, req: Request, body: bytes) -> None:
    w = conn.w
    conn.json({"object": "list", "data": [{"id": w.config.model, "object": "model", "created": w.created,
                                            "owned_by": w.config.owned_by, "root": w.config.model,
                                            "max_model_len": 32768}]})


def model_info(conn: Any, req: Request, body: bytes) -> None:
    m = conn.w.config.model
    conn.json({"model_path": m, "tokenizer_path": m, "is_generation": True,
               "preferred_sampling_params": None, "weight_version": "default"})


def server_info(conn: Any, req: Request, body: bytes) -> None:
    w = conn.w
    m = w.config.model
    conn.json({"model_path": m, "tokenizer_path": m, "served_model_name": m, "version": version(),
               "dp_size": 1, "tp_size": 1, "context_length": 32768, "max_total_num_tokens": 524288,
               "host": w.host, "port": w.port, "worker_id": w.config.worker_id, "engine": "smg-mock",
               "internal_states": [{"last_gen_throughput": 0.0}]})


def version_info(conn: Any, req: Request, body: bytes) -> None:
    conn.json({"version": version()})


def loads(conn: Any, req: Request, body: bytes) -> None:
    running = conn.w._inflight
    load = {"dp_rank": 0, "num_running_reqs": running, "num_waiting_reqs": 0, "num_total_reqs": running,
            "num_waiting_uncached_tokens": 0, "num_used_tokens": 0, "max_total_num_tokens": 524288,
            "token_usage": 0.0, "gen_throughput": 0.0, "cache_hit_rate": 0.0, "utilization": 0.0,
            "max_running_requests": 256}
    conn.json({"timestamp": time.time(), "version": version(), "dp_rank_count": 1, "loads": [load],
               "aggregate": {"total_running_reqs": running, "total_waiting_reqs": 0,
                             "total_reqs": running, "avg_token_usage": 0.0, "avg_throughput": 0.0,
                             "avg_utilization": 0.0}})


_GAUGES = (
    ("sglang:num_running_reqs", "The number of running requests."),
    ("sglang:num_queue_reqs", "The number of requests in the waiting queue."),
    ("sglang:token_usage", "The token usage."),
    ("sglang:gen_throughput", "The generation throughput (token/s)."),
    ("sglang:cache_hit_rate", "The prefix cache hit rate."),
    ("vllm:num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
)


def metrics(conn: Any, req: Request, body: bytes) -> None:
    w = conn.w
    m = w.config.model
    running = w._inflight
    values = {"sglang:num_running_reqs": running, "vllm:num_requests_running": running}
    lines = []
    for name, help_text in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                  f'{name}{{model_name="{m}"}} {values.get(name, 0.0)}']
    lines.append("")
    conn.respond(200, "\n".join(lines).encode(), ctype=b"text/plain; version=0.0.4")


def get_load(conn: Any, req: Request, body: bytes) -> None:
    """SGLang's legacy ``/get_load``: one ``{dp_rank, num_reqs, num_waiting_reqs, num_tokens}`` per rank."""
    conn.json([{"dp_rank": 0, "num_reqs": conn.w._inflight, "num_waiting_reqs": 0, "num_tokens": 0}])


def _engine_control(ok_text: bytes):
    def handler(conn: Any, req: Request, body: bytes) -> None:
        st = conn.w.stats
        st._raw_headers = req.headers
        try:
            st.last_body = _loads(body) if body else None  # what a gateway's fan-out sent
        except ValueError:
            st.last_body = None
        status = conn.w.config.admin_status
        if status == 200:
            conn.respond(200, ok_text, ctype=b"text/plain")
        else:
            conn.respond(status, b"mock worker refused the operation\n", ctype=b"text/plain")
    return handler


flush_cache = _engine_control(b"Cache flushed.\nPlease check backend logs for more details. (When there are "
                              b"running or waiting requests, the operation will not be performed.)\n")
start_profile = _engine_control(b"Start profiling.\n")
stop_profile = _engine_control(b"Stop profiling. This will take some time.\n")


# -- mock admin


def mock_stats(conn: Any, req: Request, body: bytes) -> None:
    conn.json(conn.w.stats.to_dict())


def mock_config_get(conn: Any, req: Request, body: bytes) -> None:
    conn.json(conn.w.config.to_dict())


def mock_config_post(conn: Any, req: Request, body: bytes) -> None:
    try:
        conn.w.config.update(_loads(body or b"{}"))
    except ValueError as e:
        conn.error(400, str(e))
        return
    conn.w._reset_templates()
    conn.json(conn.w.config.to_dict())


def mock_reset(conn: Any, req: Request, body: bytes) -> None:
    conn.w.reset_stats()
    conn.json({"ok": True})


ROUTES: dict = {
    b"/health": {b"GET": health},
    b"/health_generate": {b"GET": health},
    b"/readiness": {b"GET": health},
    b"/liveness": {b"GET": liveness},
    b"/v1/models": {b"GET": models},
    b"/get_model_info": {b"GET": model_info},
    b"/model_info": {b"GET": model_info},
    b"/get_server_info": {b"GET": server_info},
    b"/server_info": {b"GET": server_info},
    b"/version": {b"GET": version_info},
    b"/v1/loads": {b"GET": loads},
    b"/get_load": {b"GET": get_load},
    b"/metrics": {b"GET": metrics},
    b"/flush_cache": {b"POST": flush_cache},
    b"/start_profile": {b"POST": start_profile},
    b"/stop_profile": {b"POST": stop_profile},
    b"/v1/chat/completions": {b"POST": generation.chat},
    b"/v1/completions": {b"POST": generation.completions},
    b"/generate": {b"POST": generation.generate},
    b"/v1/messages": {b"POST": generation.messages},
    b"/v1/embeddings": {b"POST": embeddings},
    b"/v1/classify": {b"POST": classify},
    b"/v1/messages/count_tokens": {b"POST": count_tokens},
    b"/v1/rerank": {b"POST": rerank},
    b"/rerank": {b"POST": rerank},
    b"/_mock/stats": {b"GET": mock_stats},
    b"/_mock/config": {b"GET": mock_config_get, b"POST": mock_config_post},
    b"/_mock/reset": {b"POST": mock_reset},
}
