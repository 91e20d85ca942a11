"""Engine load reports: parsing (sans-I/O) and the polling monitor.

Rule 1: the ``parse_*`` functions take decoded JSON or Prometheus text and return the
``Worker.engine`` dict; they do no I/O and raise ``ValueError`` on input they cannot
read. Rule 2: ``LoadMonitor`` is the I/O shell; it fetches with
``smg.upstream.client`` and hands each report to ``on_load(worker, report)``; the
gateway stores it (``worker.engine = report``) and feeds the ``smg_engine_*`` gauges.
Rule 3: polls go to ``worker.base_url`` (the network address), never ``worker.url``
(the logical key, ``base@rank`` for a data-parallel rank). Rule 4: interval and
timeout come from the settings table (``LoadMonitor.from_config``).

The report (SMG's ``WorkerLoadResponse`` field names, aggregated over DP ranks)::

    {"num_running_reqs": 3, "num_waiting_reqs": 0, "num_total_reqs": 3,
     "num_waiting_uncached_tokens": 900, "num_used_tokens": 4096,
     "max_total_num_tokens": 524288, "token_usage": 0.4, "gen_throughput": 2500.0,
     "cache_hit_rate": 0.3, "utilization": 0.5, "max_running_requests": 256,
     "dp_rank_count": 1, "loads": [{"dp_rank": 0, ...per-rank fields...}],
     "timestamp": 1754550000.0, "source": "v1/loads"}

Only the fields the engine reported appear (plus ``num_total_reqs``, derived from
running + waiting when absent). Counts and throughput are summed over ranks; ratios
are averaged, except ``token_usage``, which is ``num_used_tokens / max_total_num_tokens``
when both are known.

Sources, per runtime (SMG ``WorkerMonitor``):
- SGLang: ``GET /v1/loads?include=core,disagg,queues,memory``; older engines answer
  the legacy ``GET /get_load``; last resort the Prometheus ``/metrics`` gauges
  (``sglang:`` or ``sglang_`` prefix).
- vLLM: ``/metrics`` (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc`` or the older ``vllm:gpu_cache_usage_perc``,
  ``vllm:gpu_prefix_cache_hit_rate``, or hit rate from the ``prefix_cache_hits`` /
  ``prefix_cache_queries`` counters of newer vLLM).
- other runtimes: ``/v1/loads``.
- gRPC workers: ``GetLoads`` (its answer has ``/v1/loads``' shape, ``parse_grpc_loads``),
  through the fetch given with the worker (``add(..., fetch=)``), which replaces the
  HTTP chain for it.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client.parser import text_string_to_metric_families

from smg.errors import UpstreamError
from smg.upstream import client
from smg.workers.background import Background
from smg.workers.worker import Worker

log = logging.getLogger("smg.workers.loads")

# Aggregation over DP ranks, per field.
SUM_FIELDS = ("num_running_reqs", "num_waiting_reqs", "num_waiting_uncached_tokens", "num_total_reqs",
              "num_used_tokens", "max_total_num_tokens", "gen_throughput", "max_running_requests",
              "prefill_queue_reqs", "decode_queue_reqs")
MEAN_FIELDS = ("token_usage", "cache_hit_rate", "utilization", "kv_transfer_latency_ms",
               "kv_transfer_speed_gb_s")
TEXT_FIELDS = ("disagg_mode",)
INT_FIELDS = frozenset(("num_running_reqs", "num_waiting_reqs", "num_waiting_uncached_tokens",
                        "num_total_reqs", "num_used_tokens", "max_total_num_tokens",
                        "max_running_requests", "prefill_queue_reqs", "decode_queue_reqs"))
LOAD_FIELDS = SUM_FIELDS + MEAN_FIELDS + TEXT_FIELDS

V1_LOADS_PATH = "/v1/loads?include=core,disagg,queues,memory"
GET_LOAD_PATH = "/get_load"
METRICS_PATH = "/metrics"

SOURCE_V1_LOADS = "v1/loads"
SOURCE_GET_LOAD = "get_load"
SOURCE_METRICS = "metrics"
SOURCE_GRPC = "grpc"

# Prometheus gauge (name without prefix) -> report field, per runtime.
SGLANG_METRICS = {
    "num_running_reqs": "num_running_reqs",
    "num_queue_reqs": "num_waiting_reqs",
    "token_usage": "token_usage",
    "gen_throughput": "gen_throughput",
    "cache_hit_rate": "cache_hit_rate",
    "utilization": "utilization",
    "num_used_tokens": "num_used_tokens",
}
SGLANG_PREFIXES = ("sglang:", "sglang_")
VLLM_METRICS = {
    "num_requests_running": "num_running_reqs",
    "num_requests_waiting": "num_waiting_reqs",
    "kv_cache_usage_perc": "token_usage",
    "gpu_cache_usage_perc": "token_usage",      # vLLM < 0.10 name of the same gauge
    "gpu_prefix_cache_hit_rate": "cache_hit_rate",
}
VLLM_PREFIXES = ("vllm:",)
# Newer vLLM dropped the hit-rate gauge for two counters.
VLLM_HIT_COUNTERS = ("prefix_cache_hits_total", "prefix_cache_queries_total")
# The label that tells DP ranks apart in each engine's metrics.
SGLANG_RANK_LABEL = "dp_rank"
VLLM_RANK_LABEL = "engine"


def _num(field: str, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                return None
        else:
            return None
    if math.isnan(v) or math.isinf(v):
        return None
    return int(v) if field in INT_FIELDS else float(v)


def _rank_fields(d: dict) -> dict:
    """Known fields of one rank's load, looking one level into nested groups
    (``/v1/loads?include=...`` may group fields as core/memory/queues/disagg)."""
    out: dict = {}
    for src in (d, *(v for v in d.values() if isinstance(v, dict))):
        for f in LOAD_FIELDS:
            if f in src and f not in out:
                v = src[f]
                if f in TEXT_FIELDS:
                    if isinstance(v, str):
                        out[f] = v
                else:
                    n = _num(f, v)
                    if n is not None:
                        out[f] = n
    if "num_total_reqs" not in out and "num_running_reqs" in out and "num_waiting_reqs" in out:
        out["num_total_reqs"] = out["num_running_reqs"] + out["num_waiting_reqs"]
    return out


def aggregate(ranks: list, source: str, timestamp: float | None = None) -> dict:
    """Builds a report from per-rank dicts (each with ``dp_rank`` and load fields)."""
    report: dict = {}
    for f in SUM_FIELDS:
        vals = [r[f] for r in ranks if f in r]
        if vals:
            report[f] = sum(vals)
    for f in MEAN_FIELDS:
        vals = [r[f] for r in ranks if f in r]
        if vals:
            report[f] = sum(vals) / len(vals)
    for f in TEXT_FIELDS:
        for r in ranks:
            if f in r:
                report[f] = r[f]
                break
    used, cap = report.get("num_used_tokens"), report.get("max_total_num_tokens")
    if used is not None and cap:
        report["token_usage"] = used / cap
    report["dp_rank_count"] = len(ranks)
    report["loads"] = ranks
    report["timestamp"] = time.time() if timestamp is None else timestamp
    report["source"] = source
    return report


def parse_v1_loads(obj) -> dict:
    """Parses SGLang's ``/v1/loads`` JSON (``{timestamp, dp_rank_count, loads:[...]}``).

    Raises:
        ValueError: not the expected shape.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("loads"), list):
        raise ValueError("/v1/loads: expected an object with a 'loads' list")
    ranks = []
    for i, item in enumerate(obj["loads"]):
        if not isinstance(item, dict):
            raise ValueError("/v1/loads: each load must be an object")
        r = _rank_fields(item)
        rank = item.get("dp_rank", i)
        r = {"dp_rank": rank if isinstance(rank, int) and not isinstance(rank, bool) else i, **r}
        ranks.append(r)
    ts = obj.get("timestamp")
    return aggregate(ranks, SOURCE_V1_LOADS, float(ts) if isinstance(ts, (int, float)) else None)


def parse_grpc_loads(obj) -> dict:
    """Parses ``GetLoads`` as ``EngineChannel.loads`` gives it (a dict of the proto's
    fields; 64-bit counts arrive as strings, which ``_num`` reads).

    Raises:
        ValueError: not the expected shape.
    """
    report = parse_v1_loads(obj)
    report["source"] = SOURCE_GRPC
    return report


def parse_get_load(obj) -> dict:
    """Parses SGLang's legacy ``/get_load``.

    Accepted shapes: a list of per-rank ``{dp_rank, num_reqs, num_waiting_reqs,
    num_tokens}`` (``num_reqs`` counts running + waiting); the old router's
    ``{"load": n}`` (taken as running requests); or a ``/v1/loads``-shaped object.

    Raises:
        ValueError: none of those shapes.
    """
    if isinstance(obj, dict):
        if isinstance(obj.get("loads"), list):
            report = parse_v1_loads(obj)
            report["source"] = SOURCE_GET_LOAD
            return report
        if "load" in obj:
            n = _num("num_running_reqs", obj["load"])
            if n is None:
                raise ValueError("/get_load: 'load' is not a number")
            return aggregate([{"dp_rank": 0, "num_running_reqs": n}], SOURCE_GET_LOAD)
        obj = [obj]
    if not isinstance(obj, list):
        raise ValueError("/get_load: expected a list or an object")
    ranks = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise ValueError("/get_load: each entry must be an object")
        r = _rank_fields(item)
        total = _num("num_total_reqs", item.get("num_reqs"))
        if total is not None:
            r["num_total_reqs"] = total
            if "num_running_reqs" not in r:
                r["num_running_reqs"] = max(0, total - r.get("num_waiting_reqs", 0))
        tokens = _num("num_used_tokens", item.get("num_tokens"))
        if tokens is not None and "num_used_tokens" not in r:
            r["num_used_tokens"] = tokens
        rank = item.get("dp_rank", i)
        ranks.append({"dp_rank": rank if isinstance(rank, int) and not isinstance(rank, bool) else i, **r})
    return aggregate(ranks, SOURCE_GET_LOAD)


def _strip(name: str, prefixes: tuple) -> str | None:
    for p in prefixes:
        if name.startswith(p):
            return name[len(p):]
    return None


def _collect(text: str, prefixes: tuple, table: dict, rank_label: str, counters: tuple = ()) -> tuple:
    """Returns ({rank: {field: value}}, {rank: {counter: value}}) for one runtime."""
    ranks: dict = {}
    extra: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            short = _strip(s.name, prefixes)
            if short is None:
                continue
            rank = s.labels.get(rank_label, "0")
            field = table.get(short)
            if field is not None:
                per = ranks.setdefault(rank, {})
                # The same gauge is exported once per TP rank (identical values) and
                # sometimes per model name; keep the largest rather than sum copies.
                v = _num(field, s.value)
                if v is not None and (field not in per or v > per[field]):
                    per[field] = v
            elif short in counters:
                per = extra.setdefault(rank, {})
                per[short] = per.get(short, 0.0) + float(s.value)
    return ranks, extra


def _rank_key(k: str):
    return (0, int(k)) if k.isdigit() else (1, k)


def _to_ranks(ranks: dict) -> list:
    out = []
    for i, k in enumerate(sorted(ranks, key=_rank_key)):
        r = _rank_fields(ranks[k])
        out.append({"dp_rank": int(k) if k.isdigit() else i, **r})
    return out


def parse_sglang_metrics(text: str) -> dict | None:
    """SGLang load gauges from Prometheus text; None if there are none.

    Raises:
        ValueError: the text is not the Prometheus exposition format.
    """
    ranks, _ = _collect(text, SGLANG_PREFIXES, SGLANG_METRICS, SGLANG_RANK_LABEL)
    if not ranks:
        return None
    return aggregate(_to_ranks(ranks), SOURCE_METRICS)


def parse_vllm_metrics(text: str) -> dict | None:
    """vLLM load gauges from Prometheus text; None if there are none.

    Raises:
        ValueError: the text is not the Prometheus exposition format.
    """
    ranks, counters = _collect(text, VLLM_PREFIXES, VLLM_METRICS, VLLM_RANK_LABEL, VLLM_HIT_COUNTERS)
    for rank, c in counters.items():
        per = ranks.setdefault(rank, {})
        q = c.get("prefix_cache_queries_total")
        if "cache_hit_rate" not in per and q:
            per["cache_hit_rate"] = c.get("prefix_cache_hits_total", 0.0) / q
    ranks = {k: v for k, v in ranks.items() if v}
    if not ranks:
        return None
    return aggregate(_to_ranks(ranks), SOURCE_METRICS)


def parse_metrics(text: str, runtime: str | None = None) -> dict | None:
    """Load from a ``/metrics`` page: vLLM's gauges for ``runtime="vllm"``, SGLang's for
    ``"sglang"``; with no runtime, SGLang's if present, else vLLM's. None if neither."""
    if runtime == "vllm":
        return parse_vllm_metrics(text)
    if runtime == "sglang":
        return parse_sglang_metrics(text)
    return parse_sglang_metrics(text) or parse_vllm_metrics(text)


def parse_report(source: str, body: bytes, runtime: str | None = None) -> dict | None:
    """Parses one fetched body by source (``SOURCE_*``). None when it holds no load.

    Raises:
        ValueError: unreadable body.
    """
    if source == SOURCE_METRICS:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("/metrics is not UTF-8") from None
        return parse_metrics(text, runtime)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError(f"{source}: not JSON") from None
    return parse_v1_loads(obj) if source == SOURCE_V1_LOADS else parse_get_load(obj)


# -- the monitor (I/O shell)

_PATHS = {SOURCE_V1_LOADS: V1_LOADS_PATH, SOURCE_GET_LOAD: GET_LOAD_PATH, SOURCE_METRICS: METRICS_PATH}


def sources_for(runtime: str | None) -> tuple:
    """The sources tried, in order, for a runtime (None/"unspecified" = SGLang's chain)."""
    if runtime == "vllm":
        return (SOURCE_METRICS,)
    if runtime in (None, "", "unspecified", "sglang"):
        return (SOURCE_V1_LOADS, SOURCE_GET_LOAD, SOURCE_METRICS)
    return (SOURCE_V1_LOADS,)


# After this many polls in a row without a report the last one is dropped
# (``on_load(worker, None)``): routing on a minutes-old load is worse than on none.
STALE_AFTER_FAILURES = 3
DEFAULT_POLL_CONCURRENCY = 64


class _Watched:
    __slots__ = ("worker", "runtime", "api_key", "source", "failures", "fetch")

    def __init__(self, worker: Worker, runtime: str | None, api_key: str | None, fetch=None) -> None:
        self.worker = worker
        self.runtime = runtime
        self.api_key = api_key
        self.source: str | None = None   # the source that answered last time
        self.failures = 0
        self.fetch = fetch                # the worker's own fetch (gRPC GetLoads); None: HTTP


class LoadMonitor(Background):
    """Polls each worker's engine load every ``interval`` seconds.

    ``on_load(worker, report)`` gets each new report; ``report`` is None after
    ``STALE_AFTER_FAILURES`` failed polls in a row. ``on_poll(worker)`` (optional) is
    told of every poll started, answered or not. ``fetch`` replaces the HTTP fetch
    (``async fetch(base_url, path, api_key) -> (status, body)``); ``sleep`` and ``clock``
    (wall seconds, for reports without a timestamp) are injectable; ``tls``
    (``smg.upstream.tls.WorkerTLS``) gives the client context of https workers.

    With ``poll_new_at_once`` (cache_aware's ttft mode, which takes each engine's
    ``max_running_requests`` from the report), a worker added while the monitor runs is
    polled at once, not one interval later; otherwise its first poll comes with the next
    round, as SMG's monitor does.
    """

    def __init__(self, on_load: Callable[[Worker, dict | None], None], *, interval: float,
                 timeout: float, api_key: str | None = None,
                 fetch: Callable[[str, str, str | None], Awaitable[tuple]] | None = None,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep,
                 concurrency: int = DEFAULT_POLL_CONCURRENCY, tls=None,
                 on_poll: Callable[[Worker], None] | None = None, poll_new_at_once: bool = False) -> None:
        if interval <= 0:
            raise ValueError("load monitor interval must be positive")
        self.tls = tls
        self.on_load = on_load
        self.on_poll = on_poll
        self.interval = interval
        self.timeout = timeout
        self.api_key = api_key
        self._fetch = fetch or self.http_fetch
        self._sleep = sleep
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._watched: dict = {}
        self._task: asyncio.Task | None = None
        self._first_polls: set = set()
        self.poll_new_at_once = poll_new_at_once

    @classmethod
    def from_config(cls, config, on_load: Callable[[Worker, dict | None], None], **kw) -> LoadMonitor:
        """A monitor with ``load_monitor_interval`` and ``load_monitor_timeout_secs``;
        ``kw`` are the other constructor arguments and may override either (tests)."""
        values = dict(interval=config.load_monitor_interval, timeout=config.load_monitor_timeout_secs,
                      poll_new_at_once=getattr(config, "cache_aware_mode", "threshold") == "ttft")
        values.update(kw)
        return cls(on_load, **values)

    def add(self, worker: Worker, runtime: str | None = None, api_key: str | None = None,
            fetch: Callable[[], Awaitable[dict | None]] | None = None) -> None:
        """``fetch`` (``async () -> report | None``, raising on failure) replaces the HTTP
        sources for this worker (a gRPC worker's ``GetLoads``)."""
        w = self._watched[worker.id] = _Watched(worker, runtime, api_key, fetch)
        if self.poll_new_at_once and self._task is not None and not self._task.done():
            t = asyncio.ensure_future(self._poll(w))
            self._first_polls.add(t)
            t.add_done_callback(self._first_polls.discard)

    def remove(self, worker: Worker) -> None:
        self._watched.pop(worker.id, None)

    async def stop(self) -> None:
        for t in list(self._first_polls):
            t.cancel()
        await super().stop()

    def __len__(self) -> int:
        return len(self._watched)

    async def http_fetch(self, url: str, path: str, api_key: str | None) -> tuple:
        headers = [("authorization", f"Bearer {api_key}")] if api_key else None
        status, _, body = await client.request(url, "GET", path, headers=headers, timeout=self.timeout,
                                               ssl=self.tls.for_url(url) if self.tls else None)
        return status, body

    async def fetch(self, worker: Worker, runtime: str | None = None, api_key: str | None = None,
                    prefer: str | None = None) -> tuple:
        """Fetches and parses one report.

        Returns:
            (report, source); (None, None) when no source answered with a load.
        """
        chain = sources_for(runtime)
        if prefer in chain:
            chain = (prefer,) + tuple(s for s in chain if s != prefer)
        for source in chain:
            try:
                status, body = await self._fetch(worker.base_url, _PATHS[source], api_key or self.api_key)
            except (UpstreamError, OSError, asyncio.TimeoutError) as e:
                log.debug("load poll %s%s failed: %s", worker.base_url, _PATHS[source], e)
                return None, None  # the worker is unreachable: no point trying other paths
            if not 200 <= status < 300:
                continue
            try:
                report = parse_report(source, body, runtime)
            except ValueError as e:
                log.debug("load poll %s%s: %s", worker.base_url, _PATHS[source], e)
                continue
            if report is not None:
                return report, source
        return None, None

    async def _poll(self, w: _Watched) -> None:
        if self.on_poll is not None:
            self.on_poll(w.worker)
        async with self._sem:
            if w.fetch is not None:
                try:
                    report, source = await w.fetch(), SOURCE_GRPC
                except (UpstreamError, OSError, asyncio.TimeoutError, ValueError) as e:
                    log.debug("load poll %s failed: %s", w.worker.base_url, e)
                    report, source = None, None
            else:
                report, source = await self.fetch(w.worker, w.runtime, w.api_key, w.source)
        if self._watched.get(w.worker.id) is not w:
            return  # removed while polling
        if report is None:
            w.source = None
            w.failures += 1
            if w.failures == STALE_AFTER_FAILURES:
                self.on_load(w.worker, None)
            return
        w.source = source
        w.failures = 0
        self.on_load(w.worker, report)

    async def poll_once(self) -> int:
        """Polls every watched worker once; returns how many were polled."""
        watched = list(self._watched.values())
        if watched:
            await asyncio.gather(*(self._poll(w) for w in watched))
        return len(watched)

    async def run(self, rounds: int | None = None) -> None:
        """Polls until cancelled (or ``rounds`` times, for tests)."""
        n = 0
        while rounds is None or n < rounds:
            n += 1
            await self.poll_once()
            if rounds is not None and n >= rounds:
                break
            await self._sleep(self.interval)
