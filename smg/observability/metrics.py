"""Prometheus metrics with SMG's names and label sets.

Theory of operation: the event loop is single-threaded, so nothing here takes a lock.
Per request, the Observer updates one Tally per request shape (smg.observability.tally;
``shapes``), from which the HTTP, router and worker families are folded at scrape
time. The per-attempt families (``smg_worker_requests_total``, ``smg_worker_errors_total``,
``smg_router_upstream_responses_total``) count a request's last attempt from its shape
and each earlier, failed one from the retry hook (``on_retry``). Rarer events (retries,
health probes, breaker transitions, load polls, discovery) update plain cells (a
one-element list per label tuple; Hist cells for histograms), and some families are
read off state kept elsewhere (breaker totals, pool sizes, engine loads). prometheus-client reads all of it only at scrape time through a custom
collector (``Metrics.collect``); the exposition is served by the gateway's own HTTP
protocol on ``--prometheus-port``.

Rules:
- Label values come from bounded sets: route paths (``other`` otherwise), models
  the registry knows (``other`` otherwise, ``unknown`` when none is named), worker
  URLs, status codes, fixed names (smg.observability.labels). No raw paths or request
  ids become labels.
- A family SMG only shows once it has a series (the error counters, the routing-key
  gauge) is ``lazy`` here: left out of the exposition until then.
- Names, types, help texts, label sets and label values are SMG's (reference §12;
  docs/compatibility.md "Metrics" lists what differs) so dashboards carry over;
  ``le`` values are written as SMG writes them (``5``, not ``5.0``).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from smg.observability.tally import Hist
from smg.api.errors import default_code
from smg.observability.labels import worker_error
from smg.observability.routing_keys import RoutingKeysHeld
from smg.workers.events import BreakerTransition, DiscoveryChanged, DiscoverySynced, HealthChecked, LoadPolled

# Seconds. Request durations span sub-millisecond gateway answers to two-hour
# generations; the bounds are SMG's, so its dashboards' bucket queries carry over.
DEFAULT_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
                            45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 480.0, 900.0, 1200.0, 1800.0, 2700.0,
                            3600.0, 5400.0, 7200.0)
# Seconds before a retry (SMG's bounds; backoff is capped by --retry-max-backoff-ms).
RETRY_BACKOFF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


_CB_VALUES = {"closed": 0, "open": 1, "half_open": 2}


def le_label(bound: float) -> str:
    """A bucket bound as an ``le`` value: integral bounds without a fraction (``5``,
    not ``5.0``), others in their shortest exact decimal form (``0.001``), never in
    exponent notation; as SMG writes them, so ``le``-matching queries carry over."""
    b = float(bound)
    if b.is_integer():
        return str(int(b))
    text = repr(b)
    if "e" in text or "E" in text:
        text = format(b, ".20f").rstrip("0")
    return text


def _buckets(les: tuple, counts) -> list:
    """Cumulative ``[(le, count), ...]`` ending with ``+Inf`` (``counts``: per bucket, +Inf last)."""
    acc = 0
    out = []
    for le, n in zip(les, counts):
        acc += n
        out.append((le, acc))
    out.append(("+Inf", acc + counts[-1]))
    return out


_ENGINE = (
    ("smg_engine_running_requests", "num_running_reqs", "Engine-reported running requests by worker, model, dp_rank"),
    ("smg_engine_waiting_requests", "num_waiting_reqs", "Engine-reported waiting requests by worker, model, dp_rank"),
    ("smg_engine_token_usage", "token_usage", "Engine-reported KV token usage ratio (0.0-1.0) by worker, model, "
     "dp_rank"),
    ("smg_engine_gen_throughput", "gen_throughput", "Engine-reported generation throughput (tokens/s) by worker, "
     "model, dp_rank"),
    ("smg_engine_cache_hit_rate", "cache_hit_rate", "Engine-reported prefix cache hit rate (0.0-1.0) by worker, "
     "model, dp_rank"),
)
_HTTP_RESPONSES_HELP = "Total HTTP responses by path, status_code and error_code"
_MODEL_HELP = ("model is the served model's id, unknown for a request that names no model, or other for a model "
               "the gateway does not serve")
# Only "poll" occurs here: loads are always fetched (no pushed load records to fall back from).
_LOAD_POLLS_HELP = ("Load-monitor tick decisions by worker and mode: poll (no pushed load record on file), "
                    "fallback (pushed records older than the tick interval), skipped_fresh_push (the worker's "
                    "KV-event stream pushed its load within the interval; no GetLoads RPC)")


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


class HistogramVec:
    __slots__ = ("name", "doc", "labels", "bounds", "les", "cells")

    def __init__(self, name: str, doc: str, labels: tuple, bounds: tuple) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.bounds = tuple(sorted(bounds))
        self.les = tuple(le_label(b) for b in self.bounds)
        self.cells: dict = {}

    def observe(self, key: tuple, value: float) -> None:
        self.cell(key).observe(value)

    def cell(self, key: tuple) -> Hist:
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = Hist(self.bounds)
        return c

    def count(self, key: tuple) -> int:
        c = self.cells.get(key)
        return sum(c.counts) if c is not None else 0

    def family(self):
        f = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        les = self.les
        for k, c in self.cells.items():
            f.add_metric(k, _buckets(les, c.counts), c.sum)
        return f


class _Derived:
    """A family folded from the shapes: ``items(shape)`` yields the shape's (label tuple,
    contribution) pairs (none when the shape is not part of the family), plus, for
    counters, the cells of ``extra``. ``lazy``: the family is left out of the exposition
    until it has a series (as SMG registers it on first use)."""

    __slots__ = ("name", "doc", "labels", "shapes", "items", "hist", "extra", "lazy")

    def __init__(self, name, doc, labels, shapes: dict, items, hist: bool, extra=None, lazy: bool = False) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.shapes = shapes
        self.items = items
        self.hist = hist
        self.extra = extra  # a CounterVec whose cells are added in (counts kept outside the shapes)
        self.lazy = lazy

    def folded(self) -> dict:
        out: dict = {}
        for sh in list(self.shapes.values()):
            for k, v in self.items(sh):
                self._add(out, k, v)
        if self.extra is not None:
            for k, c in self.extra.cells.items():
                self._add(out, k, c[0])
        return out

    def _add(self, out: dict, k, v) -> None:
        if not k:
            return
        if self.hist:
            if not any(v.counts):
                return
            acc = out.get(k)
            if acc is None:
                out[k] = [list(v.counts), v.sum, v.bounds]
            else:
                acc[0] = [a + b for a, b in zip(acc[0], v.counts)]
                acc[1] += v.sum
        elif v:
            out[k] = out.get(k, 0) + v

    def family(self):
        """The family, or None (``lazy`` and no series yet)."""
        folded = self.folded()
        if self.lazy and not folded:
            return None
        if not self.hist:
            f = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for k, v in folded.items():
                f.add_metric(k, v)
            return f
        f = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        les: dict = {}  # bounds -> their le labels, once per scrape
        for k, (counts, total, bounds) in folded.items():
            le = les.get(bounds)
            if le is None:
                le = les[bounds] = tuple(le_label(b) for b in bounds)
            f.add_metric(k, _buckets(le, counts), total)
        return f


def _router(sh):
    return sh.labels.get("rk")


def _by_protocol(connections) -> list:
    """``[((protocol,), open connections)]``; a connection names its protocol in its
    ``protocol`` attribute (HTTP/1.1 when it has none)."""
    counts = {"http/1.1": 0, "h2": 0}
    for c in list(connections):
        p = getattr(c, "protocol", "http/1.1")
        counts[p] = counts.get(p, 0) + 1
    return [((p,), n) for p, n in counts.items()]


class GaugeFn:
    """A gauge family computed at scrape time by ``fn() -> iterable of (labels, value)``
    (``counter``: a counter family read off totals kept elsewhere, e.g. the breakers;
    ``lazy``: left out of the exposition while ``fn`` yields nothing)."""

    __slots__ = ("name", "doc", "labels", "fn", "kind", "lazy")

    def __init__(self, name: str, doc: str, labels: tuple, fn, counter: bool = False, lazy: bool = False) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.fn = fn
        self.kind = CounterMetricFamily if counter else GaugeMetricFamily
        self.lazy = lazy

    def family(self):
        """The family, or None (``lazy`` and no series)."""
        items = self.fn()
        if self.lazy and not items:
            return None
        f = self.kind(self.name, self.doc, labels=self.labels)
        for k, v in items:
            f.add_metric(k, v)
        return f


class _Lazy:
    """A counter or histogram family left out of the exposition until it has a series."""

    __slots__ = ("m",)

    def __init__(self, m) -> None:
        self.m = m

    def family(self):
        return self.m.family() if self.m.cells else None


class Metrics:
    """Every metric family the gateway exports.

    Scrape-time gauges read ``registry`` (the workers), ``connections`` (the open
    client connections, a sized collection) and ``discovered`` (a callable giving
    ``[(source, workers listed)]``).
    """

    def __init__(self, registry, connections, discovered, duration_buckets: tuple = DEFAULT_DURATION_BUCKETS) -> None:
        self._workers = registry
        self.families: list = []
        self.duration_buckets = tuple(sorted(duration_buckets))
        self.shapes: dict = {}  # shape key -> Tally (filled by the Observer)
        c, h, g, d = self._counter, self._histogram, self._gauge, self._derived
        # Layer 1: HTTP (folded from the request shapes)
        d("smg_http_requests_total", "Total HTTP requests by method and path", ("method", "path"),
          lambda sh: (sh.labels["method"], sh.labels["path"]), lambda sh: sh.count)
        d("smg_http_request_duration_seconds", "HTTP request duration by method and path", ("method", "path"),
          lambda sh: (sh.labels["method"], sh.labels["path"]), lambda sh: sh.dur, hist=True)
        d("smg_http_responses_total", _HTTP_RESPONSES_HELP, ("path", "status_code", "error_code"),
          lambda sh: (sh.labels["path"], sh.labels["status"], sh.labels["error_code"]), lambda sh: sh.count)
        g("smg_http_connections_active", "Currently active HTTP connections", (),
          lambda: [((), len(connections))])
        # connections by protocol and HTTP/2 streams (SMG has no such families; new names,
        # a ``protocol`` label of "http/1.1" or "h2"), read off the connections at scrape
        g("smg_http_protocol_connections_active", "Open client connections by protocol", ("protocol",),
          lambda: _by_protocol(connections))
        g("smg_http2_streams_active", "Open HTTP/2 streams (requests being received or answered)", (),
          lambda: [((), sum(getattr(c, "stream_count", 0) for c in list(connections)))])
        self.http2_streams = c("smg_http2_streams_total", "HTTP/2 streams opened by clients", ())
        self.http2_goaway = c("smg_http2_goaway_total",
                              "HTTP/2 connections the gateway ended with GOAWAY, by reason", ("reason",))
        self.http2_resets = c("smg_http2_stream_resets_total",
                              "HTTP/2 streams reset, by the side that reset them and why", ("side", "reason"))
        # Layer 2: router. Requests that reached selection on a proxied route; failed
        # attempts before the last one (retries) are added to the per-attempt families
        # from the retry hook (``on_retry``).
        rl = ("router_type", "backend_type", "connection_mode", "model", "endpoint")
        d("smg_router_requests_total", "Total routed requests by router_type, backend_type, connection_mode, model, "
          "endpoint, streaming; " + _MODEL_HELP, rl + ("streaming",),
          lambda sh: _router(sh) and _router(sh) + (sh.labels["streaming"],), lambda sh: sh.count)
        d("smg_router_request_duration_seconds",
          "Router request duration by router_type, backend_type, connection_mode, model, endpoint", rl,
          lambda sh: sh.labels.get("rkd"), lambda sh: sh.dur, hist=True)
        d("smg_router_request_errors_total", "Router errors by router_type, backend_type, connection_mode, model, "
          "endpoint, error_type; " + _MODEL_HELP, rl + ("error_type",),
          lambda sh: _router(sh) and sh.labels.get("router_error") and _router(sh) + (sh.labels["router_error"],),
          lambda sh: sh.count, lazy=True)
        self.upstream_attempts = CounterVec("", "", ())  # failed attempts before the last
        d("smg_router_upstream_responses_total", "Upstream backend HTTP responses by router_type, status_code, "
          "error_code", ("router_type", "status_code", "error_code"),
          lambda sh: sh.labels.get("upstream"), lambda sh: sh.count,
          extra=self.upstream_attempts)
        # TTFT/TPOT/tokens of the streams the gateway observes (SMG fills these from its
        # gRPC path only; the names and labels are its)
        tl = ("router_type", "backend_type", "model", "endpoint")
        d("smg_router_ttft_seconds", "Time to first token by router_type, backend_type, model, endpoint", tl,
          lambda sh: sh.labels.get("tl"), lambda sh: sh.ttft, hist=True)
        d("smg_router_tpot_seconds", "Time per output token by router_type, backend_type, model, endpoint", tl,
          lambda sh: sh.labels.get("tl"), lambda sh: sh.tpot, hist=True)
        d("smg_router_tokens_total", "Total tokens processed by router_type, backend_type, model, endpoint, "
          "token_type", tl + ("token_type",),
          lambda sh: ((sh.labels["tl"] + ("input",), sh.tok_in), (sh.labels["tl"] + ("output",), sh.tok_out))
          if sh.labels.get("tl") else ())
        d("smg_router_generation_duration_seconds", "Total generation time by router_type, backend_type, model, "
          "endpoint", tl, lambda sh: sh.labels.get("tl"), lambda sh: sh.gen, hist=True)
        # Layer 3: workers
        g("smg_worker_pool_size", "Current worker pool size by worker_type, connection_mode, model",
          ("worker_type", "connection_mode", "model"), self._pool_sizes)
        g("smg_worker_connections_active", "Active connections to workers by worker_type, connection_mode",
          ("worker_type", "connection_mode"), self._worker_connections)
        g("smg_worker_requests_active", "Currently running requests per worker", ("worker",),
          lambda: [((w.url,), w.inflight) for w in registry.all()])
        # keys of requests in flight, per worker (the gateway wraps its upstream sends
        # with ``routing_keys.wrap``)
        self.routing_keys = RoutingKeysHeld()
        g("smg_worker_routing_keys_active", "Sticky routing keys currently held by a worker", ("worker",),
          lambda: self.routing_keys.gauge(registry), lazy=True)
        g("smg_worker_health", "Worker health status (1=healthy, 0=unhealthy)", ("worker",),
          lambda: [((w.url,), 1 if w.status == "ready" else 0) for w in registry.all()])
        # every upstream leg is HTTP/1.1 (smg/upstream/http1_leg.py)
        g("smg_worker_http2", "Whether the router speaks HTTP/2 to the worker (1=HTTP/2, 0=HTTP/1.1)", ("worker",),
          lambda: [((w.url,), 0) for w in registry.all()])
        self.worker_attempts = CounterVec("", "", ())  # failed attempts before the last: (url, model)
        d("smg_worker_requests_total", "Requests dispatched to a worker by worker (URL) and model, counted at each "
          "send", ("worker", "model"), lambda sh: sh.labels.get("worker"), lambda sh: sh.count,
          extra=self.worker_attempts)
        d("smg_worker_selection_total", "Worker selection events by worker_type, connection_mode, model, policy",
          ("worker_type", "connection_mode", "model", "policy"),
          lambda sh: sh.labels.get("selection"), lambda sh: sh.count)
        self.worker_error_attempts = CounterVec("", "", ())  # failed attempts before the last
        d("smg_worker_errors_total", "Worker-level errors by worker_type, connection_mode, error_type",
          ("worker_type", "connection_mode", "error_type"), lambda sh: sh.labels.get("worker_error"),
          lambda sh: sh.count, extra=self.worker_error_attempts, lazy=True)
        self.health_checks = c("smg_worker_health_checks_total", "Health check results by worker_type and result",
                               ("worker_type", "result"))
        # circuit breakers
        g("smg_worker_cb_state", "Circuit breaker state per worker (0=closed, 1=open, 2=half_open)", ("worker",),
          lambda: [((w.url,), _CB_VALUES.get(w.breaker.state, 0)) for w in registry.all() if w.breaker])
        self.cb_transitions = c("smg_worker_cb_transitions_total",
                                "Circuit breaker state transitions by worker, from, to", ("worker", "from", "to"))
        # the breakers' own totals, read at scrape (no per-request metric update)
        g("smg_worker_cb_outcomes_total", "Circuit breaker outcomes by worker and outcome (success/failure)",
          ("worker", "outcome"),
          lambda: [((w.url, o), n) for w in registry.all() if w.breaker
                   for o, n in (("success", w.breaker.total_successes), ("failure", w.breaker.total_failures))
                   if n], counter=True)
        g("smg_worker_cb_consecutive_failures", "Current consecutive failure count per worker", ("worker",),
          lambda: [((w.url,), w.breaker.consecutive_failures) for w in registry.all() if w.breaker])
        g("smg_worker_cb_consecutive_successes", "Current consecutive success count per worker", ("worker",),
          lambda: [((w.url,), w.breaker.consecutive_successes) for w in registry.all() if w.breaker])
        g("smg_worker_cb_health_readmissions_total", "Times a worker's open circuit breaker went half-open because "
          "the worker's health returned (its promotion to Ready) rather than at the breaker's timeout, by worker",
          ("worker",), lambda: [((w.url,), w.breaker.health_readmissions) for w in registry.all() if w.breaker],
          counter=True)
        # retries
        self.retries = c("smg_worker_retries_total", "Total retry attempts by worker_type and endpoint",
                         ("worker_type", "endpoint"))
        d("smg_worker_retries_exhausted_total", "Requests that exhausted all retries by worker_type and endpoint",
          ("worker_type", "endpoint"), lambda sh: sh.labels.get("exhausted"), lambda sh: sh.count)
        self.retry_backoff = h("smg_worker_retry_backoff_seconds", "Retry backoff duration by attempt number",
                               ("attempt",), RETRY_BACKOFF_BUCKETS)
        # engine gauges re-exported from load polls, and the polls themselves
        for name, field, doc in _ENGINE:
            g(name, doc, ("worker", "model", "dp_rank"), self._engine(field))
        self.load_polls = c("smg_engine_load_polls_total", _LOAD_POLLS_HELP, ("worker", "mode"))
        # discovery
        self.discovery_registrations = c("smg_discovery_registrations_total", "Workers registered by discovery",
                                         ("source", "result"))
        self.discovery_deregistrations = c("smg_discovery_deregistrations_total",
                                           "Workers removed by discovery", ("source", "reason"))
        self.discovery_sync = h("smg_discovery_sync_duration_seconds", "One discovery sync (read/list and apply)",
                                ("source",), (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0))
        g("smg_discovery_workers_discovered", "Workers the discovery source currently lists", ("source",),
          lambda: [((src,), n) for src, n in discovered()])

    def on_event(self, rec) -> None:
        """Consumes the worker-lifecycle records of ``smg.workers.events`` (subscribe it to
        the WorkerManager's EventBus); other records are ignored."""
        event = rec.event
        if event == HealthChecked.event:
            self.health_checks.inc((rec.worker_type, "success" if rec.ok else "failure"))
        elif event == BreakerTransition.event:
            self.cb_transitions.inc((rec.url, rec.old, rec.new))
        elif event == DiscoverySynced.event:
            self.discovery_sync.observe((rec.source,), rec.seconds)
        elif event == LoadPolled.event:
            self.load_polls.inc((rec.url, rec.mode))
        elif event == DiscoveryChanged.event:
            if rec.kind == "registration":
                self.discovery_registrations.inc((rec.source, rec.result))
            else:
                self.discovery_deregistrations.inc((rec.source, rec.result))

    def on_pd_prefill(self, ctx, worker, seconds: float, ok: bool) -> None:
        """A PD prefill leg ended with a verdict (``ok``: answered 2xx to the end)."""
        if ok:
            self.pd_prefill.observe(("sglang", ctx.model_label, worker.runtime), seconds)
        else:
            self.pd_kv_failures.inc(())

    def on_pd_bootstrap_failure(self) -> None:
        self.pd_bootstrap_failures.inc(())

    def on_retry(self, ctx, worker, attempt: int, delay: float, failed) -> None:
        """The exchange's retry hook: the attempt on ``worker`` failed (``failed``:
        (worker's status or None, transport error kind or None, status the client would
        have got)) and attempt number ``attempt`` follows after ``delay`` seconds. Counts
        the retry, its backoff, and the failed attempt in the per-attempt families (the
        last attempt of every request is counted from its shape)."""
        status, kind, fail_status = failed
        wt = worker.worker_type
        self.retries.inc((wt, ctx.endpoint.label))
        self.retry_backoff.observe((str(attempt),), delay)
        self.worker_attempts.inc((worker.url, worker.models[0] if worker.models else "unknown"))
        mode = worker.connection_mode
        self.upstream_attempts.inc((mode, str(status), "") if status else
                                   (mode, str(fail_status), default_code(fail_status)))
        err = worker_error(status or 0, kind)
        if err is not None:
            self.worker_error_attempts.inc((wt, worker.connection_mode, err))

    # -- admission (smg/admission/admit.py): registered only when a limiter or the
    # scheduler is configured, so an unconfigured gateway exports none of them

    def add_pd(self) -> None:
        """The prefill-decode families (smg/server/pd_exchange.py): registered only in PD
        mode, as SMG exports them only from its PD router."""
        self.pd_prefill = self._histogram("smg_pd_prefill_duration_seconds", "Prefill leg duration in PD mode "
                                          "(dispatch to its complete answer)", ("backend_type", "model", "runtime"),
                                          self.duration_buckets)
        self.pd_bootstrap_failures = self._counter("smg_pd_bootstrap_failures_total",
                                                   "Requests whose bootstrap fields could not be injected", ())
        self.pd_kv_failures = self._counter("smg_pd_kv_transfer_failures_total",
                                            "PD attempts whose prefill leg failed (the KV transfer could not happen)", ())

    def add_mcp(self, servers_active) -> tuple:
        """The ``smg_mcp_*`` families (smg/responses/mcp.py), registered when the
        Responses API is served: (tool calls, tool duration, iterations); each shows once
        it has a series, as SMG's do. ``servers_active()``: the configured servers whose
        session is open (None: no ``--mcp-config-path``, the gauge is left out)."""
        calls = CounterVec("smg_mcp_tool_calls_total", "MCP tool calls by model, tool_name and result "
                           "(success/error)", ("model", "tool_name", "result"))
        duration = HistogramVec("smg_mcp_tool_duration_seconds", "MCP tool call duration by model and tool_name",
                                ("model", "tool_name"), self.duration_buckets)
        iterations = CounterVec("smg_mcp_tool_iterations_total", "MCP tool-loop iterations (model calls after "
                                "tool results) by model", ("model",))
        for m in (calls, duration, iterations):
            self.families.append(_Lazy(m))
        if servers_active is not None:
            self._gauge("smg_mcp_servers_active", "Configured MCP servers with an open session", (),
                        lambda: [((), servers_active())])
        return calls, duration, iterations

    def add_storage(self, storage_type: str, connections=None, items=None) -> tuple:
        """The ``smg_db_*`` families of the history store (smg/history/metered.py):
        (operations, operation duration), each shown once it has a series;
        ``connections()`` / ``items()``: the gauges ``smg_db_connections_active`` and
        ``smg_db_items_stored`` when the backend can tell (None: left out). The items
        gauge, like the operation families, appears with the store's first operation (an
        unused store exports neither, as the Rust SMG); the connections gauge is always
        shown."""
        ops = CounterVec("smg_db_operations_total", "History storage operations by storage_type, operation and "
                         "result (success/error)", ("storage_type", "operation", "result"))
        duration = HistogramVec("smg_db_operation_duration_seconds", "History storage operation duration by "
                                "storage_type and operation", ("storage_type", "operation"), self.duration_buckets)
        for m in (ops, duration):
            self.families.append(_Lazy(m))
        if connections is not None:
            self._gauge("smg_db_connections_active", "History storage connections in use by storage_type",
                        ("storage_type",), lambda: [((storage_type,), connections())])
        if items is not None:
            self._gauge("smg_db_items_stored", "Records held by the history storage by storage_type",
                        ("storage_type",), lambda: [((storage_type,), items())] if ops.cells else [], lazy=True)
        return ops, duration

    def add_rate_limit(self) -> CounterVec:
        """``smg_http_rate_limit_total{result}`` (allowed | rejected), once."""
        m = getattr(self, "rate_limit", None)
        if m is None:
            m = self.rate_limit = self._counter("smg_http_rate_limit_total", "Rate limiting decisions by result "
                                                "(allowed/rejected)", ("result",))
        return m

    def add_admission_inflight(self, holding) -> None:
        """``smg_admission_inflight``: ``holding()`` at scrape time, the requests holding
        a token of the legacy concurrency limiter (the scheduler has its own gauges)."""
        self._gauge("smg_admission_inflight", "Requests currently holding an admission token", (),
                    lambda: [((), holding())])

    def add_scheduler(self, state, wait_buckets: tuple) -> dict:
        """The ``smg_scheduler_*`` families. Counters and the queue-wait histogram are
        returned by name (the admission stage updates them); the gauges read ``state``
        at scrape time: ``state.gauges()`` → {family name: [(label tuple, value)]}."""
        c = self._counter
        out = {
            "admit": c("smg_scheduler_admit_total", "Priority-scheduler admission outcomes", ("class", "outcome")),
            "clamp": c("smg_scheduler_clamp_total", "Requests clamped below their requested class by tenant policy",
                       ("tenant", "requested_class", "effective_class")),
            "preemption": c("smg_scheduler_preemption_total", "Requests preempted before their first byte",
                            ("by_class", "victim_class")),
            "starvation": c("smg_scheduler_starvation_promotion_total",
                            "Queued requests admitted by the starvation override", ("class",)),
            "unknown": c("smg_scheduler_unknown_priority_value_total",
                         "Requests with an unrecognized x-smg-priority value (taken as default)", ("tenant",)),
            "wait": self._histogram("smg_scheduler_queue_wait_seconds",
                                    "Time queued before admission, timeout or cancel", ("class",), wait_buckets),
        }
        for name, doc, labels in (
                ("smg_scheduler_inflight", "In-flight requests per class", ("class",)),
                ("smg_scheduler_queue_depth", "Queued requests per class", ("class",)),
                ("smg_scheduler_queue_size_limit", "Queue limit per class", ("class",)),
                ("smg_scheduler_class_capacity_pressure", "0-1: the worse of queue fill and slot pressure",
                 ("class",)),
                ("smg_scheduler_utilization", "In-flight requests / backend capacity", ())):
            self._gauge(name, doc, labels, lambda name=name: state.gauges()[name])
        return out

    def _counter(self, name, doc, labels) -> CounterVec:
        m = CounterVec(name, doc, labels)
        self.families.append(m)
        return m

    def _histogram(self, name, doc, labels, bounds) -> HistogramVec:
        m = HistogramVec(name, doc, labels, bounds)
        self.families.append(m)
        return m

    def _derived(self, name, doc, labels, key, value=None, hist: bool = False, extra=None,
                 lazy: bool = False) -> _Derived:
        """``key(shape)`` → label tuple or None, ``value(shape)`` → contribution; or, with
        ``value`` None, ``key`` is ``items(shape)`` → [(labels, contribution), ...];
        ``extra``: a CounterVec added in (not in ``families`` itself); ``lazy``: exported
        only once it has a series."""
        items = key if value is None else (lambda sh: ((key(sh), value(sh)),))
        m = _Derived(name, doc, labels, self.shapes, items, hist, extra, lazy)
        self.families.append(m)
        return m

    def _gauge(self, name, doc, labels, fn, counter: bool = False, lazy: bool = False) -> GaugeFn:
        m = GaugeFn(name, doc, labels, fn, counter, lazy)
        self.families.append(m)
        return m

    def _engine(self, field: str):
        def values():
            out = []
            for w in self._workers.all():
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
        for w in self._workers.all():
            for m in w.models or ("*",):
                k = (w.worker_type, w.connection_mode, m)
                counts[k] = counts.get(k, 0) + 1
        return list(counts.items())

    def _worker_connections(self):
        counts: dict = {}
        for w in self._workers.all():
            k = (w.worker_type, w.connection_mode)
            counts[k] = counts.get(k, 0) + (w.pool.open if w.pool is not None else 0)
        return list(counts.items())

    def add_cache_feedback(self, totals) -> None:
        """The ``smg_router_cache_*`` counters of cache_aware's closed loop (no SMG
        counterpart), read at scrape time from ``totals() -> [(model, FeedbackStats)]``:
        prompt tokens of the answers that reported usage, the cached tokens the tree
        predicted for them and those the engines reported (predicted vs actual hit rate
        = each over prompt tokens), and the tree corrections by kind."""
        for name, doc, attr in (
                ("smg_router_cache_prompt_tokens_total", "Prompt tokens of answers that reported cached tokens",
                 "prompt_tokens"),
                ("smg_router_cache_predicted_tokens_total", "Cached prompt tokens the radix tree predicted",
                 "predicted_tokens"),
                ("smg_router_cache_actual_tokens_total", "Cached prompt tokens the engines reported",
                 "actual_tokens")):
            self.families.append(GaugeFn(name, doc, ("model",),
                                         lambda a=attr: [((m,), getattr(st, a)) for m, st in totals()],
                                         counter=True))
        self.families.append(GaugeFn(
            "smg_router_cache_corrections_total", "Radix tree corrections from reported cached tokens, by kind",
            ("model", "kind"),
            lambda: [x for m, st in totals() for x in (((m, "evicted"), st.evicted), ((m, "learned"), st.learned))],
            counter=True))

    # prometheus-client collector protocol
    def collect(self):
        for m in self.families:
            f = m.family()
            if f is not None:
                yield f

    def registry(self) -> CollectorRegistry:
        r = CollectorRegistry(auto_describe=False)
        r.register(self)
        return r


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry``."""
    return generate_latest(registry)
