"""The admin and engine routes that ask the workers themselves: ``/flush_cache``,
``/start_profile``, ``/stop_profile``, ``/get_loads``, ``/engine_metrics`` (every
worker, at once) and ``/health_generate`` (one worker, relayed).

Rules:
- A fan-out asks each *server* once: logical workers sharing a network address (the
  ranks of a data-parallel server) are one request, sent to ``worker.base_url``.
  Workers still registering (``pending``) are not asked; draining ones are.
- Every request goes through the control-plane client (smg/upstream/client.py) with
  the worker's key as Bearer and the workers' TLS context; each one is bounded by
  ``FANOUT_TIMEOUT`` and at most ``FANOUT_CONCURRENCY`` are in flight, so a fan-out
  over n servers ends within ``ceil(n / FANOUT_CONCURRENCY) * FANOUT_TIMEOUT``.
- A worker that fails (transport error, timeout, non-2xx) never fails the route: it
  is reported in the answer (``failed``; ``load = -1``), and a partial result is 206.
- The answers are built by pure functions (``flush_answer``, ``profile_answer``,
  ``loads_answer``, ``merge_metrics``) from the workers' replies, so their shapes are
  unit-tested without sockets. The handlers only gather replies and write the answer;
  the waiting request is parked like a filter's (smg/server/filters.py ``Waiter``):
  bounded by the request deadline, cancelled if the client leaves. ``/health_generate``
  too goes through the control-plane client (not the exchange): it is a probe, asked
  with GET whatever the client's method, and never retried.
"""
from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Callable
from http import HTTPStatus

import orjson
from prometheus_client.parser import text_string_to_metric_families

from smg._version import __version__
from smg.errors import UpstreamError
from smg.server.filters import Waiter
from smg.upstream import client
from smg.workers.worker import PENDING

FANOUT_TIMEOUT = 5.0     # seconds per worker request (the load-poll timeout SMG uses for admin fan-outs)
FANOUT_CONCURRENCY = 32  # worker requests in flight per fan-out (SMG's bound)
MAX_FANOUT_RESPONSE = 8 * 1024 * 1024  # a worker's /metrics or /v1/loads answer larger than this is a failure

LOADS_PATH = "/v1/loads?include=core"
# Per-rank fields of a /get_loads entry, in SGLang's /v1/loads order (absent ones: 0).
RANK_FIELDS = ("num_running_reqs", "num_waiting_reqs", "num_waiting_uncached_tokens", "num_total_reqs",
               "num_used_tokens", "max_total_num_tokens", "token_usage", "gen_throughput", "cache_hit_rate",
               "utilization", "max_running_requests")
_FLOAT_FIELDS = frozenset(("token_usage", "gen_throughput", "cache_hit_rate", "utilization"))
_PROFILE_OPS = {"start_profile": "start", "stop_profile": "stop"}
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


class WorkerReply:
    """One worker's answer to a fan-out request: ``status`` (0 on a transport error),
    ``body`` bytes, ``error`` text (None when it answered 2xx). Not to be confused
    with ``smg.server.filters.Reply`` (a gateway-made error answer)."""

    __slots__ = ("worker", "url", "status", "body", "error", "content_type")

    def __init__(self, worker, url: str, status: int, body: bytes, error: str | None,
                 content_type: bytes | None = None) -> None:
        self.worker = worker
        self.url = url
        self.status = status
        self.body = body
        self.error = error
        self.content_type = content_type


def servers(workers) -> list:
    """One worker per network address, registered ones only (the fan-out targets)."""
    seen: dict = {}
    for w in workers:
        if w.status != PENDING and w.base_url not in seen:
            seen[w.base_url] = w
    return list(seen.values())


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


async def fan_out(workers, method: str, path: str, body: bytes | None = None, *, tls=None,
                  timeout: float = FANOUT_TIMEOUT, concurrency: int = FANOUT_CONCURRENCY,
                  what: str = "", with_headers: bool = False) -> list:
    """Sends ``method path`` to each worker's address; returns one ``WorkerReply``
    each, in the order of ``workers`` (with its ``content_type`` when
    ``with_headers``). Never raises for a worker's failure."""
    gate = asyncio.Semaphore(max(1, concurrency))
    op = what or path.strip("/").partition("?")[0]

    async def one(w) -> WorkerReply:
        url = w.base_url
        headers = [("authorization", "Bearer " + w.api_key.decode())] if w.api_key else None
        async with gate:
            try:
                status, head, data = await client.request(
                    url, method, path, body, headers, timeout=timeout,
                    ssl=tls.for_url(url) if tls is not None else None, limit=MAX_FANOUT_RESPONSE)
            except UpstreamError as e:
                return WorkerReply(w, url, 0, b"", f"{op} failed for worker {url}{path}: {e}")
        ctype = next((v for n, v in head if n == b"content-type"), None) if with_headers else None
        if 200 <= status < 300:
            return WorkerReply(w, url, status, data, None, ctype)
        return WorkerReply(w, url, status, data, f"{op} failed for worker {url}{path}: {_status_text(status)}",
                           ctype)

    return list(await asyncio.gather(*(one(w) for w in workers)))


# -- the answers (pure) --------------------------------------------------------------


def _failures(replies) -> list:
    return [{"worker": r.url, "error": r.error} for r in replies if r.error is not None]


def flush_answer(replies, total_workers: int) -> tuple:
    """``(status, doc)`` of ``POST /flush_cache``; 206 when some server failed."""
    ok = [r.url for r in replies if r.error is None]
    failed = _failures(replies)
    n = len(replies)
    doc = {"status": "success", "message": "", "workers_flushed": len(ok), "total_http_workers": n,
           "total_grpc_workers": 0, "total_zmq_workers_skipped": 0, "total_workers": total_workers}
    if n == 0:
        doc["message"] = "No workers available for cache flush"
        return 200, doc
    if not failed:
        doc["message"] = f"Successfully flushed cache on all {n} workers"
        return 200, doc
    doc.update(status="partial_success", message=f"Cache flush: {len(ok)} succeeded, {len(failed)} failed",
               successful=ok, failed=failed)
    return 206, doc


def profile_answer(op: str, replies, total_workers: int) -> tuple:
    """``(status, doc)`` of ``POST /start_profile`` (``op`` "start") or ``/stop_profile``
    ("stop"); 404 when there is no worker to ask, 206 when some failed."""
    if not replies:
        return 404, {"status": "error", "message": "No workers available for profiling",
                     "workers_profiled": 0, "total_workers": 0}
    ok = [r.url for r in replies if r.error is None]
    failed = _failures(replies)
    if not failed:
        verb = "started" if op == "start" else "stopped"
        return 200, {"status": "success", "message": f"Successfully {verb} profiling on all {len(ok)} workers",
                     "workers_profiled": len(ok), "total_workers": len(replies)}
    return 206, {"status": "partial_success",
                 "message": f"Profile {op}: {len(ok)} succeeded, {len(failed)} failed",
                 "workers_profiled": len(ok), "total_workers": len(replies), "successful": ok, "failed": failed}


# The engine profiler's settings (SGLang's ProfileReqInput) a /start_profile body may hold.
PROFILE_OPTIONS = {"output_dir": str, "start_step": int, "num_steps": int, "activities": list,
                   "with_stack": bool, "record_shapes": bool, "profile_by_stage": bool}


def profile_request(req) -> tuple:
    """``(url or None, options for the engine)`` from a profile request body.

    Raises:
        ValueError: not an object, an unknown field, or a field of the wrong type.
    """
    if not isinstance(req, dict):
        raise ValueError("the body must be a JSON object")
    fields = {k: v for k, v in req.items() if k != "options"}
    nested = req.get("options")
    if nested is not None:
        if not isinstance(nested, dict):
            raise ValueError("options: must be an object")
        fields.update(nested)
    url = fields.pop("url", None)
    if url is not None and not isinstance(url, str):
        raise ValueError("url: must be a string")
    options = {}
    for k, v in fields.items():
        kind = PROFILE_OPTIONS.get(k)
        if kind is None:
            raise ValueError(f"{k}: unknown field")
        if v is None:
            continue
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{k}: must be an integer")
        if kind is list and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ValueError(f"{k}: must be an array of strings")
        if kind in (str, bool) and not isinstance(v, kind):
            raise ValueError(f"{k}: must be {'a string' if kind is str else 'true or false'}")
        options[k] = v
    options.setdefault("profile_by_stage", False)
    return url, options


def _rank(entry: dict, i: int) -> dict:
    out = {"dp_rank": entry.get("dp_rank", i) if isinstance(entry.get("dp_rank", i), int) else i}
    for f in RANK_FIELDS:
        v = entry.get(f)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            v = 0.0 if f in _FLOAT_FIELDS else 0
        out[f] = float(v) if f in _FLOAT_FIELDS else int(v)
    return out


def _ranks(body: bytes) -> list:
    """The per-rank entries of a ``/v1/loads`` answer. Raises ValueError."""
    doc = orjson.loads(body)
    loads = doc.get("loads") if isinstance(doc, dict) else None
    if not isinstance(loads, list):
        raise ValueError("no 'loads' array")
    return [_rank(e, i) for i, e in enumerate(loads) if isinstance(e, dict)]


def loads_answer(replies, now: float) -> dict:
    """``GET /get_loads``: every server's ranks (``worker``, ``worker_type`` then the
    rank's fields), the totals over all of them (``aggregate``, when any answered),
    and per worker ``load`` (KV tokens in use over its ranks; -1 when it failed)."""
    entries, workers = [], []
    ok = failed = 0
    for r in replies:
        w = r.worker
        error = r.error
        ranks: list = []
        if error is None:
            try:
                ranks = _ranks(r.body)
            except ValueError as e:
                error = f"get_loads failed for worker {r.url}{LOADS_PATH}: bad answer ({e})"
        if error is None:
            ok += 1
            for rank in ranks:
                entries.append({"worker": r.url, "worker_type": w.worker_type, **rank})
        else:
            failed += 1
        workers.append({"worker": r.url, "worker_type": w.worker_type,
                        "load": sum(x["num_used_tokens"] for x in ranks) if error is None else -1,
                        **({"error": error} if error is not None else {})})
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
    doc: dict = {"timestamp": stamp, "version": f"smg-{__version__}", "dp_rank_count": len(entries),
                 "loads": entries}
    if entries:
        n = len(entries)
        doc["aggregate"] = {
            "total_running_reqs": sum(e["num_running_reqs"] for e in entries),
            "total_waiting_reqs": sum(e["num_waiting_reqs"] for e in entries),
            "total_reqs": sum(e["num_total_reqs"] for e in entries),
            "avg_token_usage": sum(e["token_usage"] for e in entries) / n,
            "avg_throughput": sum(e["gen_throughput"] for e in entries) / n,
            "avg_utilization": sum(e["utilization"] for e in entries) / n,
        }
    doc.update(workers=workers, total_workers=len(replies), successful=ok, failed=failed)
    return doc


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def merge_metrics(texts) -> str:
    """``GET /engine_metrics``: the workers' Prometheus texts as one exposition.

    ``texts`` is ``[(worker address, exposition text)]``. Every sample gains the label
    ``worker_addr`` (after its own labels); families of the same name are merged, in
    the order they were first seen, a blank line between two. A text that does not
    parse is skipped (its worker is left out).
    """
    families: dict = {}   # name -> [type, help, [sample lines]]
    for addr, text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except (ValueError, TypeError, IndexError):
            continue
        for fam in parsed:
            name = fam.name
            if fam.type == "counter" and any(s.name == name + "_total" for s in fam.samples):
                name += "_total"  # the parser drops the suffix from a counter's family name
            entry = families.setdefault(name, [fam.type, fam.documentation, []])
            for s in fam.samples:
                labels = {**s.labels, "worker_addr": addr}
                lbl = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                entry[2].append(f"{s.name}{{{lbl}}} {_value(s.value)}")
    blocks = []
    for name, (kind, doc, lines) in families.items():
        head = [f"# HELP {name} {doc}"] if doc else []
        blocks.append("\n".join(head + [f"# TYPE {name} {kind}"] + lines) + "\n")
    return "\n".join(blocks)


# -- the handlers --------------------------------------------------------------------


class FanoutRoutes:
    """Handlers of the fan-out rows of the endpoint table (provider ``"fanout"``).

    Dependencies: the exchange's (``deps``: its timer wheel, loop clock and
    settings park a waiting request), the worker registry, the selector (one ready
    worker for ``/health_generate``), the workers' TLS context.
    """

    def __init__(self, deps, registry, selector, tls=None, wall: Callable[[], float] | None = None) -> None:
        self.deps = deps
        self.registry = registry
        self.selector = selector
        self.tls = tls
        self.wall = wall or time.time
        self._rr = 0

    def _later(self, conn, ctx, coro) -> None:
        """Answers once ``coro`` returns ``(status, body, content_type)``; the request
        waits parked (deadline, client abort) meanwhile."""
        box: list = []

        async def job():
            box.append(await coro)

        def write(conn, ctx) -> None:
            status, body, ctype = box[0]
            conn.reply(status, body, content_type=ctype)

        deps = self.deps
        Waiter((), write, conn, ctx, 0, job(), deps.timers, deps.now() + deps.config.request_timeout_secs).start()

    def _targets(self) -> list:
        return servers(self.registry.all())

    def _total(self) -> int:
        return sum(1 for w in self.registry.all() if w.status != PENDING)

    # -- one worker

    def health_generate(self, conn, ctx) -> None:
        """One ready worker's ``GET /health_generate`` (in rotation), answered with its
        status, media type and body. A HEAD asks the worker with GET too (engines
        serve only GET there) and answers without the body. A worker that cannot be
        reached is a 502."""
        self._rr += 1
        worker = self.selector.any_worker(self._rr)
        if worker is None:
            conn.reply_error(503, "No workers are available", code="no_workers")
            return

        async def run():
            r = (await fan_out([worker], "GET", "/health_generate", tls=self.tls, with_headers=True))[0]
            if r.status == 0:
                ctx.error_code = "upstream_error"
                return 502, orjson.dumps({"error": {"message": r.error, "type": "server_error",
                                                    "code": "upstream_error"}}), _JSON
            return r.status, r.body, r.content_type or b"text/plain"
        self._later(conn, ctx, run())

    # -- every worker

    def flush_cache(self, conn, ctx) -> None:
        async def run():
            replies = await fan_out(self._targets(), "POST", "/flush_cache", tls=self.tls)
            status, doc = flush_answer(replies, self._total())
            return status, orjson.dumps(doc), _JSON
        self._later(conn, ctx, run())

    def start_profile(self, conn, ctx) -> None:
        self._profile(conn, ctx, "start_profile")

    def stop_profile(self, conn, ctx) -> None:
        self._profile(conn, ctx, "stop_profile")

    def _profile(self, conn, ctx, path: str) -> None:
        """Body ``{url?, <profiler options>}``: ``url`` limits it to that worker; the
        options (``PROFILE_OPTIONS``; also accepted nested as ``options``) go to each
        worker as the body of ``/start_profile`` (``profile_by_stage`` false unless
        set); ``/stop_profile`` is sent without a body."""
        try:
            req = orjson.loads(ctx.raw) if ctx.raw.strip() else {}
        except orjson.JSONDecodeError as e:
            conn.reply(400, f"Failed to parse the request body as JSON: {e}".encode(), content_type=_TEXT)
            return
        try:
            url, options = profile_request(req)
        except ValueError as e:
            conn.reply(422, f"Failed to deserialize the JSON body: {e}".encode(), content_type=_TEXT)
            return
        body = orjson.dumps(options) if path == "start_profile" else None
        targets = self._targets()
        if url is not None:
            url = url.rstrip("/")
            targets = [w for w in targets if url in (w.url, w.base_url)]
            if not targets:
                conn.reply(404, orjson.dumps({"status": "error", "message": f"No worker matching url '{url}'",
                                              "workers_profiled": 0, "total_workers": 0}))
                return

        async def run():
            replies = await fan_out(targets, "POST", "/" + path, body, tls=self.tls)
            status, doc = profile_answer(_PROFILE_OPS[path], replies, len(targets))
            return status, orjson.dumps(doc), _JSON
        self._later(conn, ctx, run())

    def get_loads(self, conn, ctx) -> None:
        async def run():
            replies = await fan_out(self._targets(), "GET", LOADS_PATH, tls=self.tls, what="get_loads")
            return 200, orjson.dumps(loads_answer(replies, self.wall())), _JSON
        self._later(conn, ctx, run())

    def engine_metrics(self, conn, ctx) -> None:
        targets = self._targets()
        if not targets:
            conn.reply(500, b"No available workers", content_type=_TEXT)
            return

        async def run():
            replies = await fan_out(targets, "GET", "/metrics", tls=self.tls)
            texts = [(r.url, r.body.decode("utf-8", "replace")) for r in replies if r.error is None]
            if not texts:
                return 500, b"All backend requests failed", _TEXT
            return 200, merge_metrics(texts).encode(), _TEXT
        self._later(conn, ctx, run())
