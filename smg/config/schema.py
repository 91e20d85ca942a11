"""Every gateway setting, declared once.

Each ``Setting`` names its CLI flag (SMG's flag name where SMG has one, so users'
scripts carry over), its YAML key (the flag without dashes, ``_`` for ``-``), type,
default and help. The CLI and the config loader are generated from this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POLICIES = ("cache_aware", "power_of_two", "consistent_hashing", "prefix_hash", "manual", "bucket",
            "least_load", "round_robin", "random")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


@dataclass(frozen=True)
class Setting:
    name: str               # attribute / YAML key
    kind: type              # int, float, str, bool, list
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    aliases: tuple = ()     # extra flag spellings, e.g. SMG's older names
    item: type = str        # element type of list settings

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple = (
    Setting("host", str, "0.0.0.0", "Address to listen on."),
    Setting("port", int, 30000, "Port to listen on.", minimum=0),
    Setting("worker_urls", list, [], "Worker base URLs (space-separated list or repeated flag)."),
    Setting("policy", str, "cache_aware", "Load-balancing policy (per model).", choices=POLICIES),
    Setting("cache_threshold", float, 0.3,
            "cache_aware: minimum prefix match rate to route to the matching worker.", minimum=0.0,
            aliases=("--cache-match-threshold",)),
    Setting("balance_abs_threshold", int, 64,
            "cache_aware/bucket: load gap (max - min in-flight) above which the system is imbalanced.",
            minimum=0, aliases=("--spill-abs-threshold",)),
    Setting("balance_rel_threshold", float, 1.5,
            "cache_aware/bucket: and max load above min load times this.", minimum=0.0,
            aliases=("--spill-rel-threshold",)),
    Setting("eviction_interval_secs", float, 60.0, "cache_aware: how often the radix trees are trimmed.",
            minimum=0.01),
    Setting("max_tree_size", int, 67108864,
            "cache_aware: estimated memory (bytes) of one model's radix tree, all its workers "
            "together (112 per node + its text as UTF-8 + 24 per worker holding the node). Trimmed "
            "to this every eviction_interval_secs, and at once when an insert passes 1.5x this. "
            "Counted in bytes, not characters, so that memory does not depend on the prompt mix "
            "(short unique prompts are mostly node overhead): the default 64 MiB holds a model's "
            "tree to at most 96 MiB.",
            minimum=1),
    Setting("prefix_token_count", int, 256,
            "prefix_hash: tokens hashed (4x as many characters for untokenized requests).", minimum=1),
    Setting("prefix_hash_load_factor", float, 1.25,
            "prefix_hash: a worker above this times the mean load is skipped.", minimum=1.0),
    Setting("assignment_mode", str, "random", "manual: how a new routing key gets its worker.",
            choices=("random", "min_load", "min_group")),
    Setting("max_idle_secs", float, 14400.0, "manual: routing keys idle this long are forgotten.",
            minimum=1.0),
    Setting("bucket_adjust_interval_secs", float, 5.0,
            "bucket: how often length-bucket boundaries are recomputed.", minimum=0.1),
    Setting("least_load_default_throughput", float, 2000.0,
            "least_load: tokens/s assumed for a worker that reports none.", minimum=1.0),
    Setting("least_load_kv_pressure_weight", float, 0.15,
            "least_load: weight (seconds) of the KV-cache pressure term.", minimum=0.0),
    Setting("least_load_mean_prefill_tokens", int, 1024,
            "least_load: assumed prompt tokens of an untokenized request.", minimum=1),
    # worker lifecycle (SMG's flags and defaults)
    Setting("health_check_interval_secs", float, 60.0, "Seconds between health probes of a worker.",
            minimum=0.01),
    Setting("health_check_timeout_secs", float, 5.0, "Timeout of one health probe.", minimum=0.01),
    Setting("health_failure_threshold", int, 3, "Consecutive failed probes before a worker is not_ready.",
            minimum=1),
    Setting("health_success_threshold", int, 2, "Consecutive good probes before a worker is ready.",
            minimum=1),
    Setting("health_check_endpoint", str, "/health", "Path probed on each worker."),
    Setting("disable_health_check", bool, False, "Do not probe workers; they start ready."),
    Setting("worker_startup_check_interval", float, 30.0, "Seconds between probes of a pending worker.",
            minimum=0.01),
    Setting("remove_unhealthy_workers", bool, False, "Remove workers that reach failed.",
            aliases=("--worker-auto-recovery",)),
    Setting("cb_failure_threshold", int, 10, "Consecutive failures that open a worker's circuit breaker.",
            minimum=1),
    Setting("cb_success_threshold", int, 3, "Consecutive successes in half-open that close it.", minimum=1),
    Setting("cb_timeout_duration_secs", float, 60.0, "Seconds a breaker stays open before half-open.",
            minimum=0.0),
    Setting("cb_window_duration_secs", float, 120.0, "Accepted for compatibility (unused, as in SMG).",
            minimum=0.0),
    Setting("disable_circuit_breaker", bool, False, "Never exclude workers for failing."),
    Setting("retry_max_retries", int, 5, "Attempts in total per request (1 = no retry).", minimum=1),
    Setting("retry_initial_backoff_ms", float, 50.0, "Backoff before the first retry.", minimum=0.0),
    Setting("retry_max_backoff_ms", float, 30000.0, "Longest backoff.", minimum=0.0),
    Setting("retry_backoff_multiplier", float, 1.5, "Backoff growth per attempt.", minimum=1.0),
    Setting("retry_jitter_factor", float, 0.2, "Backoff jitter, as a fraction of the delay.", minimum=0.0),
    Setting("disable_retries", bool, False, "One attempt per request."),
    Setting("max_buffered_request_bytes", int, 1048576,
            "Request bodies up to this size are kept for retries; larger ones get one attempt.", minimum=0),
    Setting("load_monitor_interval", float, 10.0, "Seconds between engine load polls.", minimum=0.01),
    Setting("disable_load_monitoring", bool, False, "Do not poll engines for load."),
    Setting("dp_aware", bool, False,
            "Expand a data-parallel worker into one logical worker per rank (data_parallel_rank injected)."),
    Setting("drain_settle_secs", float, 5.0,
            "After DELETE /workers/{id}, longest wait for in-flight requests before removal.", minimum=0.0),
    Setting("worker_probe_timeout_secs", float, 5.0,
            "Timeout of each registration probe of a new worker (GET /v1/models, /health, /get_server_info).",
            minimum=0.01),
    Setting("worker_registration_max_backoff_secs", float, 5.0,
            "Longest wait between attempts to reach a new worker that is not answering yet.", minimum=0.01),
    Setting("load_monitor_timeout_secs", float, 5.0, "Timeout of one engine load poll.", minimum=0.01),
    Setting("discovery_file", str, "", "JSON manifest of workers, re-read when it changes."),
    Setting("discovery_check_interval_secs", float, 30.0, "Seconds between discovery-file checks.",
            minimum=0.1),
    Setting("service_discovery", bool, False, "Discover workers from Kubernetes pods."),
    Setting("selector", list, [], "Pod label selector(s) k=v for Kubernetes discovery."),
    Setting("service_discovery_port", int, 80, "Port of discovered pods' workers.", minimum=1),
    Setting("service_discovery_namespace", str, "", "Namespace to watch (empty: all)."),
    Setting("kubeconfig", str, "", "Kubeconfig file for discovery outside a cluster."),
    Setting("max_payload_size", int, 536870912, "Largest request body in bytes (413 above).", minimum=1),
    Setting("max_header_size", int, 32768,
            "Largest request head (request line + headers) in bytes (431 above).", minimum=1024),
    Setting("max_upstream_header_size", int, 65536,
            "Largest response head (status line + headers) accepted from a worker (502 above).",
            minimum=1024),
    Setting("pipeline_queue_limit", int, 64,
            "Parsed events of pipelined requests held while a response is in progress before the "
            "connection stops reading.", minimum=1),
    Setting("usage_body_limit", int, 1048576,
            "Non-streamed answers up to this size are read at their end for token usage (metrics).",
            minimum=0),
    Setting("body_read_min_rate", int, 1024,
            "Bytes per second a request body must average once header_read_timeout_secs has passed "
            "since its head (408 below): a body dripped slowly cannot hold a connection forever.",
            minimum=1),
    Setting("request_timeout_secs", float, 1800.0,
            "Upstream request timeout: from dispatch to the end of the response (504 before the head).",
            minimum=0.001),
    Setting("connect_timeout_secs", float, 10.0, "Timeout for opening a connection to a worker.",
            minimum=0.001),
    Setting("header_read_timeout_secs", float, 30.0,
            "Time a client may take to send a complete request head (408 after).", minimum=0.001),
    Setting("idle_connection_timeout_secs", float, 90.0,
            "Idle keep-alive connections are closed after this long.", minimum=0.001),
    Setting("upstream_pool_idle_timeout_secs", float, 3.0,
            "Idle pooled worker connections are closed after this long; keep it below the "
            "engines' 5 s keep-alive so the gateway never reuses a connection the worker is closing.",
            minimum=0.001),
    Setting("upstream_pool_max_idle", int, 256, "Idle connections kept per worker.", minimum=0),
    Setting("request_id_headers", list, ["x-request-id", "x-correlation-id", "x-trace-id", "request-id"],
            "Headers whose value is taken as the request id (first present wins)."),
    Setting("shutdown_grace_period_secs", float, 180.0,
            "On SIGTERM, time given to in-flight requests before exiting.", minimum=0),
    Setting("log_level", str, "info", "Log level (access lines are logged at info).", choices=LOG_LEVELS),
    Setting("log_json", bool, False, "Write logs (and access lines) as JSON objects, one per line."),
    Setting("log_dir", str, "", "Write logs to smg.log in this directory (rotated daily) instead of stderr."),
    Setting("prometheus_host", str, "0.0.0.0", "Address of the Prometheus metrics listener."),
    Setting("prometheus_port", int, 29000, "Port of the Prometheus metrics listener (path /metrics).",
            minimum=0),
    Setting("prometheus_duration_buckets", list, [],
            "Histogram buckets (seconds) for request durations; empty = the built-in set.", item=float),
    Setting("disable_metrics", bool, False, "Do not collect or serve Prometheus metrics."),
    Setting("enable_trace", bool, False, "Export OpenTelemetry traces (needs the 'trace' extra)."),
    Setting("otlp_traces_endpoint", str, "localhost:4317", "OTLP/gRPC endpoint traces are exported to."),
    Setting("expose_overhead_header", bool, False,
            "Add x-smg-overhead-ms (gateway time before dispatch, ms) to proxied responses."),
    Setting("expose_worker_header", bool, False,
            "Add x-smg-worker (the worker URL) to proxied responses; reveals topology."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _defaults() -> dict:
    return {s.name: (list(s.default) if isinstance(s.default, list) else s.default) for s in SETTINGS}


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class GatewayConfig:
    """Resolved settings, one typed attribute per row of ``SETTINGS``, frozen.

    Build it with ``smg.config.build_config``. The class body is generated from the
    table (``__slots__`` and annotations), so a setting is an ordinary slot read on
    the hot path (no ``__getattr__``) and tools see every name. List settings are held
    as tuples; ``values`` gives the plain mapping back; ``replace`` makes a changed copy.
    """

    __slots__ = tuple(s.name for s in SETTINGS)
    __annotations__ = {s.name: (tuple if s.kind is list else s.kind) for s in SETTINGS}

    def __init__(self, values: dict | None = None) -> None:
        merged = _defaults()
        if values:
            unknown = set(values) - set(merged)
            if unknown:
                raise TypeError(f"unknown settings: {sorted(unknown)}")
            merged.update(values)
        for name, value in merged.items():
            object.__setattr__(self, name, _frozen(value))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"GatewayConfig is frozen (tried to set {name}); use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("GatewayConfig is frozen")

    @property
    def values(self) -> dict:
        return {s.name: (list(v) if isinstance(v := getattr(self, s.name), tuple) else v) for s in SETTINGS}

    def replace(self, **changes: Any) -> "GatewayConfig":
        v = self.values
        v.update(changes)
        return GatewayConfig(v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GatewayConfig) and self.values == other.values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GatewayConfig({self.values!r})"


def setting(name: str) -> Setting:
    return _BY_NAME[name]
