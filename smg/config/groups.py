"""Headings of the settings, for ``--help`` and docs/configuration.md.

Each ``Group`` lists, in the order shown, the settings of one area: ``shared`` are the
flags smg has in common with SMG's command line (listed under the same heading as
there, in the same order), ``local`` are smg's own additions. A setting that no group
names is shown under ``OTHER`` (a new row of smg/config/schema.py is never hidden);
tests/unit/test_cli_smg_help.py checks the ``shared`` lists against SMG's help.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    title: str
    about: str
    shared: tuple = ()
    local: tuple = ()

    @property
    def names(self) -> tuple:
        return self.shared + self.local


OTHER = Group("Other Settings", "Settings not yet given a heading")

GROUPS: tuple = (
    Group("Worker Configuration", "Listener address and worker connections",
          shared=("host", "port", "worker_urls", "upstream_http2", "upstream_pool_idle_timeout_secs",
                  "health_check_port"),
          local=("connect_timeout_secs", "upstream_pool_max_idle", "max_upstream_header_size",
                 "worker_allowed_addresses", "worker_probe_timeout_secs",
                 "worker_registration_max_backoff_secs", "drain_settle_secs")),
    Group("Routing Policy", "Load balancing and routing",
          shared=("policy", "encode_policy", "prefill_policy", "decode_policy", "cache_threshold",
                  "prefix_token_count", "prefix_hash_load_factor", "prefix_hash_balance_abs_threshold",
                  "least_load_kv_pressure_weight", "least_load_default_throughput",
                  "least_load_mean_prefill_tokens", "least_load_max_waiting_requests",
                  "power_of_two_load_metric", "balance_abs_threshold", "balance_rel_threshold",
                  "balance_token_usage_threshold", "overload_token_usage_threshold",
                  "worker_overload_waiting_requests", "worker_overload_token_usage",
                  "worker_overload_protection", "disable_worker_overload_protection", "worker_overload_shed",
                  "kv_index", "worker_stall_secs", "worker_wedge_secs", "worker_stale_secs",
                  "worker_warmup_secs", "worker_warmup_share", "worker_warmup_blocks",
                  "worker_warmup_thin_ratio", "worker_warmup_divert_every", "selection_policy",
                  "selection_accounting_ttl_ms", "overlap_decay", "selection_temperature",
                  "bucket_adjust_interval_secs", "eviction_interval_secs", "max_tree_size", "block_size",
                  "cache_boundaries", "cache_index", "cache_ttl_secs", "max_idle_secs", "assignment_mode",
                  "max_payload_size", "max_buffered_request_bytes", "pd_admission_wait_secs",
                  "stream_body_stall_timeout_secs", "sse_keepalive_secs", "dp_aware", "routing_key_override",
                  "routing_key_headers", "dp_minimum_tokens_scheduler", "enable_igw"),
          local=("panic_routing", "cache_aware_mode", "cache_aware_request_cost_tokens",
                 "cache_feedback", "route_explain")),
    Group("PD/EPD Disaggregation", "Prefill-decode and encode-prefill-decode serving",
          shared=("pd_disaggregation", "epd_disaggregation", "encode", "prefill", "decode",
                  "prefill_max_inflight_requests_per_worker", "prefill_queue_size",
                  "prefill_queue_timeout_secs", "worker_startup_timeout_secs", "worker_startup_delay",
                  "worker_startup_check_interval")),
    Group("Service Discovery (Kubernetes)", "Workers found from Kubernetes pods",
          shared=("service_discovery", "discovery_provider", "selector", "service_discovery_port",
                  "service_discovery_namespace", "kv_connector_annotation", "kv_engine_id_annotation",
                  "encode_selector", "prefill_selector", "decode_selector", "router_selector",
                  "model_id_from", "model_alias"),
          local=("kubeconfig",)),
    Group("Service Discovery (File)", "Workers listed in a JSON manifest",
          shared=("discovery_file", "discovery_check_interval_secs")),
    Group("Worker Jobs and Load Monitoring", "Control-plane job queue and engine load polls",
          shared=("job_queue_capacity", "job_queue_concurrency", "load_monitor_interval",
                  "disable_load_monitoring"),
          local=("load_monitor_timeout_secs",)),
    Group("Multimodal", "Media preprocessing and tensor transport",
          shared=("multimodal_tensor_transport", "multimodal_shm_min_bytes", "multimodal_max_inflight_bytes",
                  "mm_per_request_image_limit", "mm_processing", "mm_pixel_cache_mb", "mm_pixel_rdma",
                  "mm_allowed_media_domains", "mm_allow_private_media_hosts", "rdma_listen_ip",
                  "rdma_slot_ttl_s", "log_mm_timing")),
    Group("Logging", "Log output",
          shared=("log_dir", "log_level", "log_json")),
    Group("Prometheus Metrics", "Metrics export",
          shared=("prometheus_port", "prometheus_host", "prometheus_duration_buckets"),
          local=("disable_metrics",)),
    Group("Profiling", "Heap profiles of the gateway process",
          shared=("jemalloc_prof_dir",)),
    Group("Request Handling", "Request limits, timeouts, ids and browsers",
          shared=("request_id_headers", "storage_context_headers", "request_timeout_secs",
                  "shutdown_grace_period_secs", "header_read_timeout_secs", "idle_connection_timeout_secs",
                  "trust_tenant_header", "tenant_header_name", "cors_allowed_origins"),
          local=("systemd_wait_for_worker", "max_header_size", "pipeline_queue_limit", "usage_body_limit", "body_read_min_rate",
                 "body_budget_bytes", "body_budget_per_connection_bytes", "expose_overhead_header",
                 "expose_worker_header", "forward_headers", "forward_all_headers", "upstream_request_id")),
    Group("HTTP/2 Listener", "SETTINGS values and flood limits of client HTTP/2 connections",
          local=("http2_max_concurrent_streams", "http2_initial_window_size", "http2_max_frame_size",
                 "http2_max_header_list_size", "http2_flood_window_secs", "http2_max_resets_per_window",
                 "http2_max_pings_per_window", "http2_max_settings_per_window",
                 "http2_zero_window_timeout_secs")),
    Group("Rate Limiting", "Concurrent request and queue limits",
          shared=("max_concurrent_requests", "queue_size", "queue_timeout_secs", "rate_limit_tokens_per_second",
                  "max_background_responses")),
    Group("Retry Configuration", "Automatic retries of failed requests",
          shared=("retry_max_retries", "retry_initial_backoff_ms", "retry_max_backoff_ms",
                  "retry_backoff_multiplier", "retry_jitter_factor", "disable_retries")),
    Group("Circuit Breaker", "Per-worker circuit breakers",
          shared=("cb_failure_threshold", "cb_success_threshold", "cb_timeout_duration_secs",
                  "cb_window_duration_secs", "disable_circuit_breaker")),
    Group("Health Checks", "Worker health probes",
          shared=("health_failure_threshold", "health_success_threshold", "health_check_timeout_secs",
                  "health_check_interval_secs", "health_check_endpoint", "disable_health_check",
                  "remove_unhealthy_workers")),
    Group("Tokenizer", "Tokenizer and chat template",
          shared=("model_path", "tokenizer_path", "chat_template", "disable_tokenizer_autoload", "parser",
                  "tokenizer_cache_enable_l0", "tokenizer_cache_l0_max_entries", "tokenizer_cache_enable_l1",
                  "tokenizer_cache_l0_max_memory", "tokenizer_cache_l1_max_memory")),
    Group("Parsers", "Reasoning and tool-call parsers",
          shared=("reasoning_parser", "tool_call_parser", "mcp_config_path"),
          local=("http_parse_output",)),
    Group("Backend", "Backend runtime and history storage",
          shared=("backend", "zmq_engine_count", "enable_wasm", "storage_hook_wasm_path", "history_backend",
                  "history_memory_max_responses", "history_memory_max_items", "history_memory_retention_secs",
                  "schema_config")),
    Group("Oracle Database", "Oracle history backend",
          shared=("oracle_wallet_path", "oracle_tns_alias", "oracle_connect_descriptor", "oracle_username",
                  "oracle_password", "oracle_external_auth", "oracle_pool_min", "oracle_pool_max",
                  "oracle_pool_timeout_secs")),
    Group("PostgreSQL Database", "PostgreSQL history backend",
          shared=("postgres_db_url", "postgres_pool_max", "postgres_op_timeout_secs")),
    Group("Redis Database", "Redis history backend",
          shared=("redis_url", "redis_pool_max", "redis_retention_days", "redis_op_timeout_secs")),
    Group("TLS/mTLS Security", "Certificates of the listener and for workers",
          shared=("client_cert_path", "client_key_path", "ca_cert_paths", "tls_cert_path", "tls_key_path"),
          local=("tls_client_ca_path",)),
    Group("Tracing (OpenTelemetry)", "Distributed tracing",
          shared=("enable_trace", "otlp_traces_endpoint")),
    Group("Control Plane Authentication", "API key and JWT/OIDC authentication",
          shared=("api_key", "control_plane_api_keys", "control_plane_audit_enabled", "jwt_issuer",
                  "jwt_audience", "jwt_jwks_uri", "jwt_role_mapping"),
          local=("jwt_role_claim", "control_plane_host", "control_plane_port")),
    Group("RL Control Plane", "Worker discovery and engine control routes for RL training",
          shared=("enable_rl", "rl_control_timeout_secs", "rl_fanout_concurrency")),
    Group("Data Plane Authentication", "Per-tenant API keys for the serving path",
          shared=("tenant_api_key",)),
    Group("Priority Scheduler", "Priority-aware admission",
          shared=("priority_scheduler_enabled", "priority_scheduler_default_max_class",
                  "priority_scheduler_config", "priority_scheduler_tenant_metric_top_n"),
          local=("worker_capacity_override",)),
    Group("Tenant Rate Limit", "Per-tenant token and request rate limits",
          shared=("tenant_rate_limit_enabled", "tenant_rate_limit_config"),
          local=("tenant_rate_limit_max_tenants",)),
    Group("Mesh Server", "Several gateways sharing state",
          shared=("enable_mesh", "mesh_server_name", "mesh_host", "mesh_advertise_host", "mesh_port",
                  "mesh_peer_urls", "mesh_tls_ca_cert", "mesh_tls_cert", "mesh_tls_key")),
)

SHARED = frozenset(n for g in GROUPS for n in g.shared)


def grouped(settings) -> list:
    """[(Group, [Setting, ...]), ...] in display order; settings no group names come last
    under ``OTHER``; empty groups are left out."""
    by_name = {s.name: s for s in settings}
    out = []
    seen = set()
    for g in GROUPS:
        rows = [by_name[n] for n in g.names if n in by_name]
        seen.update(s.name for s in rows)
        if rows:
            out.append((g, rows))
    rest = [s for s in settings if s.name not in seen]
    if rest:
        out.append((OTHER, rest))
    return out
