"""Prometheus metrics with SMG's names and label sets.

Theory of operation: the event loop is single-threaded, so the hot path updates plain
Python cells (a one-element list per label tuple for counters; bucket arrays for
histograms) with no locks and no per-request dict building. prometheus-client reads
them only at scrape time through a custom collector (``Metrics.collect``), and the
exposition is served by the gateway's own HTTP protocol on ``--prometheus-port``.

Rules:
- Label values come from bounded sets: route paths (``unmatched`` otherwise), models
  the registry knows (``other`` otherwise), worker URLs, status codes, fixed names.
  No raw paths or request ids become labels.
- Names and label sets are SMG's (reference §12) so dashboards carry over.
"""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Seconds. Request durations span sub-millisecond gateway answers to long generations.
DEFAULT_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                            10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


_CB_VALUES = {"closed": 0, "open": 1, "half_open": 2}
_ENGINE = (
    ("smg_engine_running_requests", "num_running_reqs", "Requests running in the engine"),
    ("smg_engine_waiting_requests", "num_waiting_reqs", "Requests queued in the engine"),
    ("smg_engine_token_usage", "token_usage", "KV cache usage (0-1)"),
    ("smg_engine_gen_throughput", "gen_throughput", "Generation throughput (tokens/s)"),
    ("smg_engine_cache_hit_rate", "cache_hit_rate", "Prefix cache hit rate"),
)


class CounterVec:
    __slots__ = ("name", "doc", "labels", "cells")

    def __init__(self, name: str, doc: str, labels: tuple) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.cells: dict = {}

    def inc(self, key: tuple, amount: float = 1) -> None:
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        c[0] += amount

    def cell(self, key: tuple) -> list:
        """The mutable one-element list holding ``key``'s value (callers do ``c[0] += n``)."""
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        return c

    def value(self, key: tuple) -> float:
        c = self.cells.get(key)
        return c[0] if c is not None else 0

    def family(self):
        f = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for k, c in self.cells.items():
            f.add_metric(k, c[0])
        return f


class _HistCell:
    __slots__ = ("counts", "sum", "bounds")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class HistogramVec:
    __slots__ = ("name", "doc", "labels", "bounds", "cells")

    def __init__(self, name: str, doc: str, labels: tuple, bounds: tuple) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.bounds = tuple(sorted(bounds))
        self.cells: dict = {}

    def observe(self, key: tuple, value: float) -> None:
        self.cell(key).observe(value)

    def cell(self, key: tuple) -> _HistCell:
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = _HistCell(self.bounds)
        return c

    def count(self, key: tuple) -> int:
        c = self.cells.get(key)
        return sum(c.counts) if c is not None else 0

    def family(self):
        f = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for k, c in self.cells.items():
            acc = 0
            buckets = []
            for b, n in zip(self.bounds, c.counts):
                acc += n
                buckets.append((repr(float(b)), acc))
            buckets.append(("+Inf", acc + c.counts[-1]))
            f.add_metric(k, buckets, c.sum)
        return f


class GaugeFn:
    """A gauge family computed at scrape time by ``fn() -> iterable of (labels, value)``."""

    __slots__ = ("name", "doc", "labels", "fn")

    def __init__(self, name: str, doc: str, labels: tuple, fn) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.fn = fn

    def family(self):
        f = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for k, v in self.fn():
            f.add_metric(k, v)
        return f


class Metrics:
    """Every metric family the gateway exports; ``gw`` supplies scrape-time gauges."""

    def __init__(self, gw, duration_buckets: tuple = DEFAULT_DURATION_BUCKETS) -> None:
        self.gw = gw
        self.families: list = []
        c, h, g = self._counter, self._histogram, self._gauge
        # Layer 1: HTTP
        self.http_requests = c("smg_http_requests_total", "HTTP requests received", ("method", "path"))
        self.http_duration = h("smg_http_request_duration_seconds", "HTTP request duration",
                               ("method", "path"), duration_buckets)
        self.http_responses = c("smg_http_responses_total", "HTTP responses sent",
                                ("path", "status_code", "error_code"))
        g("smg_http_connections_active", "Open client connections", (),
          lambda: [((), len(gw.connections))])
        self.rate_limit = c("smg_http_rate_limit_total", "Admission decisions", ("result",))
        # Layer 2: router
        rl = ("router_type", "backend_type", "connection_mode", "model", "endpoint")
        self.router_requests = c("smg_router_requests_total", "Requests routed", rl + ("streaming",))
        self.router_duration = h("smg_router_request_duration_seconds", "Routed request duration", rl,
                                 duration_buckets)
        self.router_errors = c("smg_router_request_errors_total", "Routed requests that failed",
                               rl + ("error_type",))
        self.upstream_responses = c("smg_router_upstream_responses_total", "Worker responses by status",
                                    ("router_type", "status_code", "error_code"))
        tl = ("router_type", "backend_type", "model", "endpoint")
        self.ttft = h("smg_router_ttft_seconds", "Time to first token (streams)", tl, TTFT_BUCKETS)
        self.tpot = h("smg_router_tpot_seconds", "Time per output token (streams)", tl, TPOT_BUCKETS)
        self.tokens = c("smg_router_tokens_total", "Tokens reported in usage", tl + ("token_type",))
        self.generation = h("smg_router_generation_duration_seconds", "First to last token (streams)", tl,
                            duration_buckets)
        # Layer 3: workers
        g("smg_worker_pool_size", "Workers registered", ("worker_type", "connection_mode", "model"),
          self._pool_sizes)
        g("smg_worker_connections_active", "Open connections to workers", ("worker_type", "connection_mode"),
          self._worker_connections)
        g("smg_worker_requests_active", "In-flight requests per worker", ("worker",),
          lambda: [((w.url,), w.inflight) for w in gw.registry.all()])
        g("smg_worker_health", "1 if the worker is ready", ("worker",),
          lambda: [((w.url,), 1 if w.status == "ready" else 0) for w in gw.registry.all()])
        self.selection = c("smg_worker_selection_total", "Worker selections",
                           ("worker_type", "connection_mode", "model", "policy"))
        self.worker_errors = c("smg_worker_errors_total", "Worker transport/protocol errors",
                               ("worker_type", "connection_mode", "error_type"))
        self.health_checks = c("smg_worker_health_checks_total", "Health probes", ("worker_type", "result"))
        # circuit breakers
        g("smg_worker_cb_state", "Breaker state (0 closed, 1 open, 2 half-open)", ("worker",),
          lambda: [((w.url,), _CB_VALUES.get(w.breaker.state, 0)) for w in gw.registry.all() if w.breaker])
        self.cb_transitions = c("smg_worker_cb_transitions_total", "Breaker transitions", ("worker", "from", "to"))
        self.cb_outcomes = c("smg_worker_cb_outcomes_total", "Outcomes counted by breakers", ("worker", "outcome"))
        g("smg_worker_cb_consecutive_failures", "Breaker failure streak", ("worker",),
          lambda: [((w.url,), w.breaker.consecutive_failures) for w in gw.registry.all() if w.breaker])
        g("smg_worker_cb_consecutive_successes", "Breaker success streak", ("worker",),
          lambda: [((w.url,), w.breaker.consecutive_successes) for w in gw.registry.all() if w.breaker])
        # retries
        self.retries = c("smg_worker_retries_total", "Retried attempts", ("worker_type", "endpoint"))
        self.retries_exhausted = c("smg_worker_retries_exhausted_total", "Requests out of attempts",
                                   ("worker_type", "endpoint"))
        self.retry_backoff = h("smg_worker_retry_backoff_seconds", "Backoff before a retry", ("attempt",),
                               (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        # engine gauges re-exported from load polls
        for name, field, doc in _ENGINE:
            g(name, doc, ("worker", "model", "dp_rank"), self._engine(field))
        # discovery
        self.discovery_registrations = c("smg_discovery_registrations_total", "Workers registered by discovery",
                                         ("source", "result"))
        self.discovery_deregistrations = c("smg_discovery_deregistrations_total",
                                           "Workers removed by discovery", ("source", "reason"))

    def _counter(self, name, doc, labels) -> CounterVec:
        m = CounterVec(name, doc, labels)
        self.families.append(m)
        return m

    def _histogram(self, name, doc, labels, bounds) -> HistogramVec:
        m = HistogramVec(name, doc, labels, bounds)
        self.families.append(m)
        return m

    def _gauge(self, name, doc, labels, fn) -> GaugeFn:
        m = GaugeFn(name, doc, labels, fn)
        self.families.append(m)
        return m

    def _engine(self, field: str):
        def values():
            out = []
            for w in self.gw.registry.all():
                rep = w.engine
                if not rep:
                    continue
                model = w.models[0] if w.models else "*"
                ranks = rep.get("loads") or [dict(rep, dp_rank=0)]
                for r in ranks:
                    v = r.get(field)
                    if isinstance(v, (int, float)):
                        out.append(((w.url, model, str(r.get("dp_rank", 0))), v))
            return out
        return values

    def _pool_sizes(self):
        counts: dict = {}
        for w in self.gw.registry.all():
            for m in w.models or ("*",):
                k = (w.worker_type, "http", m)
                counts[k] = counts.get(k, 0) + 1
        return list(counts.items())

    def _worker_connections(self):
        counts: dict = {}
        for w in self.gw.registry.all():
            k = (w.worker_type, "http")
            counts[k] = counts.get(k, 0) + (w.pool.open if w.pool is not None else 0)
        return list(counts.items())

    # prometheus-client collector protocol
    def collect(self):
        for m in self.families:
            yield m.family()

    def registry(self) -> CollectorRegistry:
        r = CollectorRegistry(auto_describe=False)
        r.register(self)
        return r


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry``."""
    return generate_latest(registry)
