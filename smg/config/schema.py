"""Every gateway setting, declared once.

Each ``Setting`` names its CLI flag (SMG's flag name where SMG has one, so users'
scripts carry over), its YAML key (the flag without dashes, ``_`` for ``-``), type,
default and help. The CLI and the config loader are generated from this table.

Rules the table keeps:

- ``status`` says whether smg has the feature: ``SUPPORTED`` settings are wired to it;
  ``NOT_YET`` settings are accepted (so command lines written for the same flags parse)
  but any value other than their default stops start-up with one line naming the
  setting (smg/config/load.py). A feature that lands flips its row to ``SUPPORTED``.
- ``negatable`` boolean flags also take ``--no-<flag>`` (and ``--no-<alias>``); their
  default may be None, meaning "decided from other settings" at load time.
- A default of None means unset; help texts say what unset means.
- Which heading a setting is listed under in ``--help`` and docs/configuration.md is
  data too: smg/config/groups.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POLICIES = ("cache_aware", "power_of_two", "consistent_hashing", "prefix_hash", "manual", "bucket",
            "least_load", "round_robin", "random", "passthrough")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


SUPPORTED = "supported"
NOT_YET = "not yet"


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
    status: str = "supported"   # SUPPORTED or NOT_YET (accepted only at its default)
    negatable: bool = False     # bool flags: also --no-<flag> / --no-<alias>
    pending: tuple = ()         # choices accepted by the parser but refused as NOT_YET (a backend to come)

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
    Setting("assignment_mode", str, None,
            "manual: how a new routing key gets its worker: random, min_load (fewest in flight), "
            "min_group (fewest routing keys) or delegate (chosen by the underlying policy, fewest in "
            "flight for manual itself, then pinned). Unset: random.",
            choices=("random", "min_load", "min_group", "delegate")),
    Setting("max_idle_secs", float, 14400.0, "manual: routing keys idle this long are forgotten.",
            minimum=1.0, aliases=("--sticky-key-idle-secs",)),
    Setting("bucket_adjust_interval_secs", float, 5.0,
            "bucket: how often length-bucket boundaries are recomputed.", minimum=0.1),
    Setting("least_load_default_throughput", float, 2000.0,
            "least_load: tokens/s assumed for a worker that reports none.", minimum=1.0),
    Setting("least_load_kv_pressure_weight", float, 0.15,
            "least_load: weight (seconds) of the KV-cache pressure term.", minimum=0.0),
    Setting("least_load_mean_prefill_tokens", int, 1024,
            "least_load: assumed prompt tokens of an untokenized request.", minimum=1),
    Setting("cache_aware_mode", str, "threshold",
            "cache_aware: how the worker is chosen. threshold: SMG's rule (the longest match above "
            "cache_threshold unless its load passes the balance thresholds, else the least loaded). "
            "ttft: the worker with the least estimated time to first token, prefill of the tokens it "
            "does not hold plus the queue ahead relative to its reported max_running_requests.",
            choices=("threshold", "ttft")),
    Setting("cache_aware_request_cost_tokens", int, 2048,
            "cache_aware ttft mode: how long one request ahead of ours keeps a slot busy, in the "
            "time the engine takes to prefill this many tokens.", minimum=1),
    Setting("cache_feedback", bool, False,
            "cache_aware: correct the radix tree from the cached_tokens each answer reports (a worker "
            "that found far fewer cached tokens than predicted has its oldest entries trimmed to a "
            "learned capacity); exports smg_router_cache_* predicted-vs-actual counters. Streams "
            "report usage only when the client asks (stream_options.include_usage).", negatable=True),
    Setting("route_explain", bool, False,
            "Add x-smg-route-explain to proxied HTTP responses: the policy and chosen worker, and for "
            "cache_aware each candidate's match (tokens), requests ahead, capacity and estimated cost.",
            negatable=True),
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
    Setting("remove_unhealthy_workers", bool, None,
            "Remove workers that reach failed, so that discovery registers them again once they are "
            "back. Unset: on exactly when a discovery source (service_discovery, discovery_file) is "
            "configured; --no-remove-unhealthy-workers keeps it off under discovery.",
            aliases=("--worker-auto-recovery",), negatable=True),
    Setting("cb_failure_threshold", int, 10, "Consecutive failures that open a worker's circuit breaker.",
            minimum=1),
    Setting("cb_success_threshold", int, 3, "Consecutive successes in half-open that close it.", minimum=1),
    Setting("cb_timeout_duration_secs", float, 60.0, "Seconds a breaker stays open before half-open.",
            minimum=0.0),
    Setting("cb_window_duration_secs", float, 120.0, "Accepted for compatibility (unused, as in SMG).",
            minimum=0.0),
    Setting("disable_circuit_breaker", bool, False, "Never exclude workers for failing."),
    Setting("panic_routing", bool, False,
            "When health checks and circuit breakers exclude every worker of a model, send the "
            "request to those workers anyway instead of answering 503 no_available_workers."),
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
    Setting("discovery_provider", str, None,
            "Worker discovery provider: kubernetes (the same as service_discovery) or file (needs "
            "discovery_file). Give this or service_discovery, not both.", choices=("kubernetes", "file")),
    Setting("selector", list, [], "Pod label selector(s) k=v for Kubernetes discovery."),
    Setting("service_discovery_port", int, 80, "Port of discovered pods' workers.", minimum=1),
    Setting("service_discovery_namespace", str, "", "Namespace to watch (empty: all)."),
    Setting("kubeconfig", str, "", "Kubeconfig file for discovery outside a cluster."),
    # TLS (SMG's flags): the listener, and https workers
    Setting("tls_cert_path", str, "",
            "Serve HTTPS: the server certificate chain (PEM); needs tls_key_path. ALPN offers h2 and "
            "http/1.1. SIGHUP re-reads certificate and key for new connections (open ones keep theirs; "
            "a file that does not load keeps the current one and is logged). The TLS handshake must "
            "finish within header_read_timeout_secs."),
    Setting("tls_key_path", str, "", "The server certificate's private key (PEM)."),
    Setting("tls_client_ca_path", str, "",
            "smg addition (no SMG flag): with TLS on, require clients to present a certificate "
            "issued by a CA in this PEM file (mutual TLS on the data plane); re-read on SIGHUP."),
    Setting("ca_cert_paths", list, [],
            "CA certificates (PEM files or hashed directories) trusted for https:// workers, in "
            "addition to the system store."),
    Setting("client_cert_path", str, "",
            "Client certificate (PEM) presented to https:// workers (mutual TLS); needs client_key_path."),
    Setting("client_key_path", str, "", "Private key (PEM) of client_cert_path."),
    # authentication and control-plane roles (SMG's flags and defaults; smg/auth)
    Setting("api_key", str, "",
            "The gateway's shared API key: inference routes need Authorization: Bearer <key> (or "
            "x-api-key); without control-plane auth, admin routes need it too. Also the default key sent "
            "to workers listed with --worker-urls."),
    Setting("tenant_api_key", list, [],
            "Per-tenant data-plane keys TENANT_ID:KEY (repeat the flag); each authenticates as tenant "
            "auth:<TENANT_ID>. With only tenant keys, admin routes refuse everyone."),
    Setting("control_plane_api_keys", list, [],
            "Control-plane keys 'id:name:role:key', role admin or user (repeat the flag). Admin routes and "
            "the Workers API need the admin role (a user key gets 403)."),
    Setting("control_plane_audit_enabled", bool, False,
            "Log an audit line (logger smg.audit, message control_plane_audit) for every control-plane "
            "request authenticated, denied or refused."),
    Setting("jwt_issuer", str, "",
            "OIDC issuer of control-plane JWTs (needs jwt_audience); the iss claim must equal it, and "
            "without jwt_jwks_uri its .well-known/openid-configuration names the JWKS."),
    Setting("jwt_audience", str, "", "Audience control-plane JWTs must carry in aud (needs jwt_issuer)."),
    Setting("jwt_jwks_uri", str, "",
            "JWKS of the issuer's signing keys (default: discovered from the issuer). https:// only "
            "(http:// for localhost); cached an hour, re-fetched on an unknown kid (at most every 30 s)."),
    Setting("jwt_role_claim", str, "roles",
            "JWT claim holding the caller's role(s); when absent, role, roles, groups and group are read."),
    Setting("jwt_role_mapping", list, [],
            "IdP role to gateway role, 'IdpRole=admin' or 'IdpRole=user' (repeat the flag); with "
            "mappings only mapped values count, else a claim value admin/user is the role."),
    Setting("control_plane_host", str, "127.0.0.1",
            "smg addition (no SMG flag): address of the separate control-plane listener (see "
            "control_plane_port)."),
    Setting("control_plane_port", int, -1,
            "smg addition (no SMG flag): serve the Workers API and admin routes on their own listener "
            "at control_plane_host:this port (0: any free port); the main listener then answers 404 on "
            "them. -1: served on the main listener.", minimum=-1),
    Setting("max_payload_size", int, 536870912, "Largest request body in bytes (413 above).", minimum=1),
    # admission of bodies, browsers and worker addresses
    Setting("body_budget_bytes", int, 1073741824,
            "smg addition (no SMG flag): request-body bytes held in memory at once, all connections "
            "together (bodies are kept whole until their request ends). Reserved as the bytes arrive; a "
            "body that finds it spent is answered 503 body_budget_exhausted (Retry-After: 1), at once when "
            "its Content-Length does not fit in what is free. The default 1 GiB keeps uploads to a known "
            "share of memory (two bodies of the maximum payload size at a time); 0 turns the budget off.",
            minimum=0),
    Setting("body_budget_per_connection_bytes", int, 536870912,
            "smg addition (no SMG flag): most of body_budget_bytes one connection may hold (one HTTP/1.1 "
            "request at a time, HTTP/2 streams together); a body above it is answered 413 "
            "payload_too_large. The default equals max_payload_size's.", minimum=1),
    Setting("cors_allowed_origins", list, [],
            "Origins (scheme://host[:port]) browsers may call the gateway from, or * for any. CORS is the "
            "outermost stage: a preflight (OPTIONS with Access-Control-Request-Method) from an allowed "
            "origin is answered 200 on any path (methods GET POST PUT PATCH DELETE OPTIONS, the requested "
            "headers, max-age 3600), from another one 403 cors_origin_not_allowed; answers to an allowed "
            "origin carry Access-Control-Allow-Origin and expose x-request-id. Credentials are never "
            "allowed. Empty: no CORS header at all (unlike SMG, which then allows any origin: give * for that)."),
    Setting("worker_allowed_addresses", list, [],
            "smg addition (no SMG flag): worker addresses registered although the address guard refuses "
            "them (link-local 169.254.0.0/16 and fe80::/10, cloud metadata services fd00:ec2::254, "
            "100.100.100.200, 168.63.129.16 and names like metadata.google.internal): IP addresses, CIDR "
            "networks or host names. Host names are resolved (within worker_probe_timeout_secs) and every "
            "address they resolve to is judged."),
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
    # HTTP/2 listener (h2c with prior knowledge; h2 by ALPN on TLS): SETTINGS and flood limits
    Setting("http2_max_concurrent_streams", int, 100,
            "HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS, streams a client may have open on one connection.",
            minimum=1),
    Setting("http2_initial_window_size", int, 65535,
            "HTTP/2: SETTINGS_INITIAL_WINDOW_SIZE for request bodies, and the connection window "
            "(bytes, at most 2147483647). Windows are reopened as the gateway takes the body in.",
            minimum=65535),
    Setting("http2_max_frame_size", int, 16384,
            "HTTP/2: SETTINGS_MAX_FRAME_SIZE, largest frame payload accepted (16384..16777215).",
            minimum=16384),
    Setting("http2_max_header_list_size", int, 65536,
            "HTTP/2: SETTINGS_MAX_HEADER_LIST_SIZE, largest decoded request header list (bytes, "
            "RFC 9113 sizes); a larger header block (HPACK bomb, CONTINUATION flood) ends the "
            "connection with GOAWAY ENHANCE_YOUR_CALM.", minimum=1024),
    Setting("http2_flood_window_secs", float, 10.0,
            "HTTP/2: the time window the reset, PING and SETTINGS limits below count over.", minimum=0.1),
    Setting("http2_max_resets_per_window", int, 400,
            "HTTP/2: RST_STREAM frames a client may send per window before the connection is ended "
            "with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).", minimum=1),
    Setting("http2_max_pings_per_window", int, 100,
            "HTTP/2: PING frames a client may send per window (GOAWAY ENHANCE_YOUR_CALM above).",
            minimum=1),
    Setting("http2_max_settings_per_window", int, 50,
            "HTTP/2: SETTINGS frames a client may send per window (GOAWAY ENHANCE_YOUR_CALM above).",
            minimum=1),
    Setting("http2_zero_window_timeout_secs", float, 30.0,
            "HTTP/2: a response stream that cannot send for this long because the client keeps its "
            "flow-control window at zero (or stops reading the connection) is reset.", minimum=0.01),
    Setting("upstream_pool_idle_timeout_secs", float, 3.0,
            "Idle pooled worker connections are closed after this long; keep it below the "
            "engines' 5 s keep-alive so the gateway never reuses a connection the worker is closing.",
            minimum=0.001),
    Setting("upstream_pool_max_idle", int, 256, "Idle connections kept per worker.", minimum=0),
    Setting("request_id_headers", list, ["x-request-id", "x-correlation-id", "x-trace-id", "request-id"],
            "Headers whose value is taken as the request id (first present wins)."),
    Setting("forward_headers", list, [],
            "Client request headers forwarded to workers besides SMG's allow-list (authorization, "
            "x-request-id, x-request-id-*, x-correlation-id, traceparent, tracestate, "
            "x-smg-routing-key, anthropic-version, anthropic-beta); NAME* forwards every name "
            "starting with NAME."),
    Setting("forward_all_headers", bool, False,
            "Forward every end-to-end client request header to workers (hop-by-hop ones and the "
            "gateway's own credentials still dropped)."),
    Setting("upstream_request_id", str, "client",
            "x-request-id sent to workers: 'client' (the client's when it sent one, else none) or "
            "'uuid4' (else a fresh UUID4, for engines that refuse other ids); the gateway's own id "
            "stays in logs, traces and the response header.", choices=("client", "uuid4")),
    Setting("shutdown_grace_period_secs", float, 180.0,
            "On SIGTERM, time given to in-flight requests before exiting.", minimum=0),
    Setting("systemd_wait_for_worker", bool, False,
            "Under systemd (Type=notify, NOTIFY_SOCKET set): send READY=1 only once a worker is "
            "ready, not as soon as the listeners are bound."),
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
    # tenants (SMG's flags and defaults)
    Setting("trust_tenant_header", bool, False,
            "Take the tenant of a request from tenant_header_name (tenant key header:<value>); only "
            "behind a proxy that sets it, since any client can send it."),
    Setting("tenant_header_name", str, "x-smg-tenant-id",
            "Header naming a request's tenant when trust_tenant_header is set."),
    Setting("tenant_rate_limit_enabled", bool, False,
            "Per-tenant requests/minute and tokens/minute limits from tenant_rate_limit_config "
            "(429 tenant_rate_limit_exceeded, with Retry-After)."),
    Setting("tenant_rate_limit_config", str, "",
            "YAML file of the tenant rate limits (default_policy, tenants, model_rules); required "
            "with tenant_rate_limit_enabled, checked at start-up."),
    Setting("tenant_rate_limit_max_tenants", int, 65536,
            "Tenants whose rate-limit state is kept; past this the least recently seen one is "
            "forgotten (its limits start full again), so client-chosen tenant keys cannot grow memory.",
            minimum=1),
    # admission: the legacy concurrency limiter and the priority scheduler (SMG's flags, 1.13 defaults)
    Setting("max_concurrent_requests", int, -1,
            "Inference requests in flight at once (legacy limiter; a request holds its slot until its "
            "answer or stream ends). -1: 1024 x CPU cores, at least 4096 (SMG 1.13); 0: no limiter. Also "
            "the priority scheduler's capacity when no worker is healthy.", minimum=-1),
    Setting("queue_size", int, 100,
            "Requests that wait for a slot when max_concurrent_requests are in flight (FIFO); a full queue, "
            "or 0, answers 429 at once (with Retry-After).", minimum=0),
    Setting("queue_timeout_secs", float, 60.0,
            "Longest wait in the queue; then 408 queue_timeout.", minimum=0.0),
    Setting("rate_limit_tokens_per_second", float, 0.0,
            "With the limiter: its slots also refill at this rate (SMG's token bucket); with the priority "
            "scheduler: a requests/second limit checked first (429). 0: unset (the limiter is then a pure "
            "concurrency bound).", minimum=0.0),
    Setting("priority_scheduler_enabled", bool, False,
            "Admit by priority class (X-SMG-Priority: system, interactive, default, bulk) with per-class "
            "reservations, queues, starvation promotion and preemption, instead of the legacy limiter."),
    Setting("priority_scheduler_config", str, "",
            "YAML file of per-class settings (classes: {<class>: {reserved_floor, reserved_per_slot, "
            "queue_size, queue_timeout_secs, starvation_threshold_secs, can_preempt}}) and tenant ceilings "
            "(tenant_policies: {<tenant key>: {max_class}}); checked at start-up."),
    Setting("priority_scheduler_default_max_class", str, "default",
            "Highest class a tenant not in tenant_policies may use (X-SMG-Priority is clamped to it).",
            choices=("system", "interactive", "default", "bulk")),
    Setting("priority_scheduler_tenant_metric_top_n", int, 32,
            "Tenants given their own label in the smg_scheduler_* families; later ones are 'other'.",
            minimum=0),
    Setting("worker_capacity_override", int, 0,
            "Priority scheduler capacity, fixed (0: from the workers: the sum of their reported "
            "max_running_requests, 64 for a worker that reports none).", minimum=0),
    # flags whose meaning smg already has without a setting of its own
    Setting("enable_igw", bool, False,
            "Serve several models at once (per-model policies, workers of any model). smg always "
            "does, so the flag changes nothing; it is accepted so that command lines carry over."),
    Setting("disable_tokenizer_autoload", bool, False,
            "Do not load the tokenizer of tokenizer_path/model_path at start-up (as SMG, which "
            "also skips fetching gRPC workers' tokenizers; smg has no gRPC workers)."),
    Setting("disable_worker_overload_protection", bool, None,
            "Turn worker overload protection off. smg has none yet (worker_overload_* are accepted "
            "only at their defaults), so the flag states what smg does."),
    # accepted, but only at their defaults until the feature exists (status NOT_YET)
    Setting("job_queue_capacity", int, 1000,
            "Control-plane jobs (worker add/remove) that may wait in the job queue.", status=NOT_YET),
    Setting("job_queue_concurrency", int, 200,
            "Control-plane jobs run at once.", status=NOT_YET),
    Setting("multimodal_tensor_transport", str, None,
            "How multimodal tensors reach gRPC engines: inline, shm, auto or rdma.",
            choices=("inline", "shm", "auto", "rdma"), status=NOT_YET),
    Setting("multimodal_shm_min_bytes", int, None,
            "Smallest tensor sent over shared memory.", status=NOT_YET),
    Setting("multimodal_max_inflight_bytes", int, None,
            "Preprocessed media bytes held for engines at once.", status=NOT_YET),
    Setting("mm_per_request_image_limit", int, None,
            "Images one request may carry, for every model.", status=NOT_YET),
    Setting("mm_processing", str, None,
            "Where media for gRPC workers is fetched and preprocessed: auto, router or worker.",
            choices=("auto", "router", "worker"), status=NOT_YET),
    Setting("mm_pixel_cache_mb", int, None,
            "Pixel cache for gateway-preprocessed media, in MiB.", status=NOT_YET),
    Setting("mm_pixel_rdma", bool, False,
            "Serve cached pixels over RDMA.", status=NOT_YET),
    Setting("mm_allowed_media_domains", list, [],
            "Hosts client media URLs may be fetched from (comma-separated).", status=NOT_YET),
    Setting("mm_allow_private_media_hosts", bool, False,
            "Allow media URLs on loopback, link-local or private addresses.", status=NOT_YET),
    Setting("rdma_listen_ip", str, None,
            "Listener address of the RDMA pixel lane.", status=NOT_YET),
    Setting("rdma_slot_ttl_s", int, None,
            "Lifetime of a leased RDMA pixel slot, in seconds.", status=NOT_YET),
    Setting("log_mm_timing", bool, False,
            "Log per-request multimodal timings.", status=NOT_YET),
    Setting("upstream_http2", bool, False,
            "Speak HTTP/2 (h2c, prior knowledge) to workers.", status=NOT_YET),
    Setting("health_check_port", int, None,
            "Serve liveness/readiness/health on a dedicated probe port too.", status=NOT_YET),
    Setting("encode_policy", str, None,
            "Policy for encode workers (encode-prefill-decode mode).",
            choices=("random", "round_robin", "consistent_hashing"), status=NOT_YET),
    Setting("prefill_policy", str, None,
            "Policy for prefill workers (prefill-decode mode); unset: policy.",
            choices=("random", "round_robin", "passthrough", "cache_aware", "power_of_two", "least_load",
            "manual", "consistent_hashing", "prefix_hash", "bucket")),
    Setting("decode_policy", str, None,
            "Policy for decode workers (prefill-decode mode); unset: policy.",
            choices=("random", "round_robin", "passthrough", "cache_aware", "power_of_two", "least_load",
            "manual", "consistent_hashing", "prefix_hash")),
    Setting("prefix_hash_balance_abs_threshold", int, 10,
            "prefix_hash: load above the mean a worker must also exceed to count as overloaded.",
            status=NOT_YET),
    Setting("least_load_max_waiting_requests", int, 0,
            "least_load: skip workers with this many waiting requests (0: no cap).", status=NOT_YET),
    Setting("power_of_two_load_metric", str, "expected_wait",
            "power_of_two: what the two workers are compared on.",
            choices=("expected_wait", "requests", "least_requests"), status=NOT_YET),
    Setting("balance_token_usage_threshold", float, 1.0,
            "cache_aware: engine KV-usage spread above which affinity yields to shortest queue (1.0: off).",
            status=NOT_YET),
    Setting("overload_token_usage_threshold", float, 1.0,
            "cache_aware: engine KV usage above which the hottest engine is avoided (1.0: off).",
            status=NOT_YET),
    Setting("worker_overload_waiting_requests", int, 8,
            "Waiting requests at which a worker is left out of routing.", status=NOT_YET),
    Setting("worker_overload_token_usage", float, 0.8,
            "KV usage at which a worker is left out of routing.", status=NOT_YET),
    Setting("worker_overload_protection", bool, None,
            "Keep worker overload protection on.", status=NOT_YET),
    Setting("worker_overload_shed", bool, False,
            "Answer 503 when every usable worker is overloaded.", status=NOT_YET),
    Setting("kv_index", str, "positional",
            "Event-driven KV index behind cache-aware routing: positional or chain.", status=NOT_YET),
    Setting("worker_stall_secs", int, 2,
            "Seconds without contact after which a transport failure excludes a worker.",
            status=NOT_YET),
    Setting("worker_wedge_secs", int, 3,
            "Seconds without progress after which a loaded worker stops getting requests.",
            status=NOT_YET),
    Setting("worker_stale_secs", int, 15,
            "Seconds without contact after which a load-pushing worker is excluded (0: off).",
            status=NOT_YET),
    Setting("worker_warmup_secs", int, 60,
            "cache_aware warm-up slice for new workers, in seconds (0: off).", status=NOT_YET),
    Setting("worker_warmup_share", float, 0.25,
            "Share of cache misses offered to warming workers.", status=NOT_YET),
    Setting("worker_warmup_blocks", int, 1024,
            "Index growth (blocks) after which a worker is warm.", status=NOT_YET),
    Setting("worker_warmup_thin_ratio", float, 0.5,
            "Share of the fleet median below which a worker's index is thin.", status=NOT_YET),
    Setting("worker_warmup_divert_every", int, 8,
            "One cache hit in this many goes to a thin worker (0: off).", status=NOT_YET),
    Setting("selection_policy", str, "cache-aware-default",
            "cache_aware selection policy (one exists: cache-aware-default).", status=NOT_YET),
    Setting("selection_accounting_ttl_ms", int, 0,
            "Lifetime of optimistic dispatch bookings for cache_aware (0: off).", status=NOT_YET),
    Setting("overlap_decay", float, 0.0,
            "cache_aware anti-hotspot decay of overlap scores (0: off).", status=NOT_YET),
    Setting("selection_temperature", float, 0.0,
            "cache_aware softmax temperature for event-driven selection (0: argmax).", status=NOT_YET),
    Setting("block_size", int, 16,
            "KV block size for event-driven cache-aware routing.", status=NOT_YET),
    Setting("cache_boundaries", list, [],
            "Token positions at which engines keep reusable prefix state.", status=NOT_YET),
    Setting("cache_index", str, "tree",
            "cache_aware index: tree (radix trees) or hash (exact-match placements).",
            choices=("tree", "hash"), status=NOT_YET),
    Setting("cache_ttl_secs", int, 180,
            "Seconds a hash-index placement stays routable.", status=NOT_YET),
    Setting("pd_admission_wait_secs", int, 30,
            "Seconds a prefill/decode dispatch waits for a decode slot.", status=NOT_YET),
    Setting("stream_body_stall_timeout_secs", int, 300,
            "Abort a streamed request body stalled this long (0: off).", status=NOT_YET),
    Setting("sse_keepalive_secs", int, 15,
            "Send an SSE keep-alive after this much upstream silence (0: none).", status=NOT_YET),
    Setting("routing_key_override", bool, False,
            "Sticky sessions on any policy (routing-key headers, then request-id lineage).",
            aliases=("--sticky-sessions",), status=NOT_YET),
    Setting("routing_key_headers", list, [],
            "Headers checked, in order, for the routing key.", status=NOT_YET),
    Setting("dp_minimum_tokens_scheduler", bool, False,
            "Pick the data-parallel rank with the fewest cached tokens.", status=NOT_YET),
    Setting("pd_disaggregation", bool, False,
            "Prefill-decode disaggregated mode (SGLang's bootstrap rendezvous over HTTP)."),
    Setting("epd_disaggregation", bool, False,
            "Encode-prefill-decode disaggregated mode.", status=NOT_YET),
    Setting("encode", list, [],
            "Encode worker URL and optional bootstrap port (repeat the flag).", status=NOT_YET),
    Setting("prefill", list, [],
            "Prefill worker URL and optional bootstrap port or none (repeat the flag)."),
    Setting("decode", list, [],
            "Decode worker URL (repeat the flag)."),
    Setting("prefill_max_inflight_requests_per_worker", int, -1,
            "In-flight prefill requests per worker (<= 0: no limit).", status=NOT_YET),
    Setting("prefill_queue_size", int, None,
            "Requests waiting for prefill admission.", status=NOT_YET),
    Setting("prefill_queue_timeout_secs", int, None,
            "Longest wait for prefill admission.", status=NOT_YET),
    Setting("worker_startup_timeout_secs", int, 1800,
            "Longest time a starting worker may take to register.", status=NOT_YET),
    Setting("worker_startup_delay", int, 0,
            "Grace period before the first startup check of a worker.", status=NOT_YET),
    Setting("kv_connector_annotation", str, "smg.ai/kv-connector",
            "Pod annotation naming a worker's vLLM KV connector.", status=NOT_YET),
    Setting("kv_engine_id_annotation", str, "smg.ai/kv-engine-id",
            "Pod annotation naming a worker's KV engine id.", status=NOT_YET),
    Setting("encode_selector", list, [],
            "Label selector of encode pods (k=v).", status=NOT_YET),
    Setting("prefill_selector", list, [],
            "Label selector of prefill pods (k=v).", status=NOT_YET),
    Setting("decode_selector", list, [],
            "Label selector of decode pods (k=v).", status=NOT_YET),
    Setting("router_selector", list, [],
            "Label selector of sibling gateway pods (mesh).", status=NOT_YET),
    Setting("model_id_from", str, None,
            "Take each discovered worker's model id from namespace, label:<key> or annotation:<key>.",
            status=NOT_YET),
    Setting("model_alias", list, [],
            "Extra client-facing model name, <alias>=<canonical> (repeat the flag).", status=NOT_YET),
    Setting("jemalloc_prof_dir", str, None,
            "Directory POST /heap_profile writes heap profiles to.", status=NOT_YET),
    Setting("storage_context_headers", list, [],
            "HEADER=CONTEXT_KEY pairs mapped into storage-hook context.", status=NOT_YET),
    Setting("max_background_responses", int, 1024,
            "Responses API background requests in flight at once.", status=SUPPORTED),
    Setting("model_path", str, None,
            "Model folder whose tokenizer the gateway loads at start-up (a local HF directory or a "
            "tokenizer.json; a Hugging Face id is refused: nothing is downloaded). Registered under "
            "this path as its name, for /v1/tokenize and /v1/tokenizers.", aliases=("--model",)),
    Setting("tokenizer_path", str, None,
            "Tokenizer to load at start-up (overrides model_path; a local HF directory or a "
            "tokenizer.json)."),
    Setting("chat_template", str, None,
            "Chat template of the start-up tokenizer (a .jinja file, chat_template.json or "
            "tokenizer_config.json), compiled at start-up; unset: the tokenizer folder's own."),
    Setting("parser", str, "legacy",
            "Reasoning/tool-call parser family: legacy or symphony.", choices=("legacy", "symphony"),
            status=NOT_YET),
    Setting("tokenizer_cache_enable_l0", bool, False,
            "Whole-string (L0) cache on the start-up tokenizer."),
    Setting("tokenizer_cache_l0_max_entries", int, 10000,
            "Entries of the whole-string tokenizer cache.", minimum=0),
    Setting("tokenizer_cache_enable_l1", bool, False,
            "Prefix (L1) cache on the start-up tokenizer, split at special-token boundaries."),
    Setting("tokenizer_cache_l0_max_memory", int, 268435456,
            "Memory of the whole-string tokenizer cache, bytes (estimated).", minimum=0),
    Setting("tokenizer_cache_l1_max_memory", int, 52428800,
            "Memory of the prefix tokenizer cache, bytes (estimated).", minimum=0),
    Setting("reasoning_parser", str, None,
            "Parser separating reasoning text from chat answers of gRPC workers (and HTTP workers with --http-parse-output); default: by model name.",
            choices=("base", "cohere_cmd", "deepseek_r1", "deepseek_v31", "deepseek_v4", "deepseek_v4.1",
            "deepseek_v41", "dots3", "function_gemma", "gemma4", "glm", "glm4", "glm45", "hf", "hy4",
            "hy_v4", "inkling", "iquest", "json", "k2_horizon", "kimi", "kimi_k25", "kimi_k3",
            "kimi_thinking", "lfm2.5", "ling", "llama_nemotron", "minicpm5", "minimax", "minimax_m2",
            "minimax_m3", "mistral_v13", "nano_v3", "olmo3", "passthrough", "plain", "qwen2.5", "qwen3",
            "qwen3_tagged", "qwen3_tagged_direct", "qwen3_thinking", "seed_oss", "step3", "xlam")),
    Setting("tool_call_parser", str, None,
            "Parser extracting tool calls from chat answers of gRPC workers (and HTTP workers with --http-parse-output); default: by model name.",
            choices=("cohere", "deepseek", "deepseek31", "deepseek32", "deepseek_v4", "deepseek_v4.1",
            "deepseek_v41", "dots3", "function_gemma", "gemma4", "glm", "glm4", "glm45_moe", "glm47_moe",
            "hf", "hy4", "hy_v4", "inkling", "iquest", "json", "k2_horizon", "kimi_k3", "kimik2", "lfm2.5",
            "ling", "llama", "llama_nemotron", "minicpm5", "minimax_m2", "minimax_m3", "mistral",
            "mistral_v13", "nemotron", "olmo3", "passthrough", "plain", "pythonic", "qwen", "qwen2.5",
            "qwen3", "qwen3_tagged", "qwen3_tagged_direct", "qwen_coder", "qwen_xml", "sarashina",
            "seed_oss", "step3", "xlam")),
    Setting("http_parse_output", bool, False,
            "Run the reasoning and tool-call parsers on chat answers of HTTP workers too (for servers "
            "that return raw model text); a worker's parse_output label overrides it."),
    Setting("mcp_config_path", str, None,
            "MCP (Model Context Protocol) servers configuration file (YAML or JSON).", status=SUPPORTED),
    Setting("backend", str, "sglang",
            "Backend runtime: sglang, openai, anthropic, vllm or tokenspeed.",
            choices=("sglang", "openai", "anthropic", "vllm", "tokenspeed"), status=NOT_YET),
    Setting("zmq_engine_count", int, None,
            "Data-parallel engines per ZMQ worker.", status=NOT_YET),
    Setting("enable_wasm", bool, None,
            "WebAssembly plugin support.", status=NOT_YET),
    Setting("storage_hook_wasm_path", str, None,
            "WASM component implementing storage hooks.", status=NOT_YET),
    Setting("history_backend", str, "memory",
            "Storage of conversations and responses: memory, none, oracle, postgres or redis.",
            choices=("memory", "none", "oracle", "postgres", "redis"), status=SUPPORTED,
            pending=("oracle",)),
    Setting("history_memory_max_responses", int, 10000,
            "Stored responses the memory backend keeps.", status=SUPPORTED),
    Setting("history_memory_max_items", int, 100000,
            "Conversation items the memory backend keeps.", status=SUPPORTED),
    Setting("history_memory_retention_secs", int, 86400,
            "How long the memory backend keeps a record (0: until a count bound).", status=SUPPORTED),
    Setting("schema_config", str, None,
            "YAML file remapping storage tables and columns.", status=NOT_YET),
    Setting("oracle_wallet_path", str, None,
            "Oracle ATP wallet directory.", status=NOT_YET),
    Setting("oracle_tns_alias", str, None,
            "Oracle TNS alias.", status=NOT_YET),
    Setting("oracle_connect_descriptor", str, None,
            "Oracle connection descriptor (DSN).", status=NOT_YET),
    Setting("oracle_username", str, None,
            "Oracle user name.", status=NOT_YET),
    Setting("oracle_password", str, None,
            "Oracle password.", status=NOT_YET),
    Setting("oracle_external_auth", bool, False,
            "Oracle external authentication.", status=NOT_YET),
    Setting("oracle_pool_min", int, 1,
            "Smallest Oracle connection pool.", status=NOT_YET),
    Setting("oracle_pool_max", int, 16,
            "Largest Oracle connection pool.", status=NOT_YET),
    Setting("oracle_pool_timeout_secs", int, 30,
            "Oracle pool timeout.", status=NOT_YET),
    Setting("postgres_db_url", str, None,
            "PostgreSQL connection URL.", status=SUPPORTED),
    Setting("postgres_pool_max", int, 16,
            "Largest PostgreSQL connection pool.", status=SUPPORTED),
    Setting("postgres_op_timeout_secs", int, 5,
            "Bound on each PostgreSQL call.", status=SUPPORTED),
    Setting("redis_url", str, None,
            "Redis connection URL.", status=SUPPORTED),
    Setting("redis_pool_max", int, 16,
            "Largest Redis connection pool.", status=SUPPORTED),
    Setting("redis_retention_days", int, 30,
            "Redis data retention in days (-1: forever).", status=SUPPORTED),
    Setting("redis_op_timeout_secs", int, 5,
            "Bound on each Redis call.", status=SUPPORTED),
    Setting("enable_rl", bool, False,
            "Mount the RL control plane under /v1/rl.", status=NOT_YET),
    Setting("rl_control_timeout_secs", int, 600,
            "Timeout of one proxied engine control call.", status=NOT_YET),
    Setting("rl_fanout_concurrency", int, 32,
            "Engine calls at once in one RL fan-out.", status=NOT_YET),
    Setting("enable_mesh", bool, False,
            "Mesh of gateways sharing state (high availability).", status=NOT_YET),
    Setting("mesh_server_name", str, None,
            "This gateway's mesh name (unset: random).", status=NOT_YET),
    Setting("mesh_host", str, "0.0.0.0",
            "Mesh listener address.", status=NOT_YET),
    Setting("mesh_advertise_host", str, None,
            "Mesh address advertised to peers.", status=NOT_YET),
    Setting("mesh_port", int, 39527,
            "Mesh listener port.", status=NOT_YET),
    Setting("mesh_peer_urls", list, [],
            "Mesh peers to join (host:port).", status=NOT_YET),
    Setting("mesh_tls_ca_cert", str, None,
            "CA certificate of mesh peers.", status=NOT_YET),
    Setting("mesh_tls_cert", str, None,
            "This node's mesh certificate.", status=NOT_YET),
    Setting("mesh_tls_key", str, None,
            "This node's mesh private key.", status=NOT_YET),
)

_BY_NAME = {s.name: s for s in SETTINGS}

# Settings holding credentials: never shown by repr (logs, tracebacks).
SECRET_SETTINGS = frozenset(n for n in ("api_key", "tenant_api_key", "control_plane_api_keys") if n in _BY_NAME)


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
        shown = {k: ("<redacted>" if v and k in SECRET_SETTINGS else v) for k, v in self.values.items()}
        return f"GatewayConfig({shown!r})"


def setting(name: str) -> Setting:
    return _BY_NAME[name]
