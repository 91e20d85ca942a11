"""The known, intended differences between smg-proxy and the Rust SMG: the one allow-list.

Rules:
- Only intended differences belong here, each with its reason; a difference that is a
  bug (being fixed or not) stays a failure. Every entry is also listed in
  docs/compatibility.md, section "Known differences", under the same ``key``.
- An entry matches a ``Difference`` when each of its globs (``fnmatch``, case
  sensitive; a tuple of globs: any of them) matches the difference's field of the
  same name.
- An entry no longer matching any difference fails the session (conftest.py checks at
  the end, for every entry whose ``case`` glob matched a case that ran), so the list
  cannot rot: fixing or removing a difference means removing its entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from tests.conformance.compare import Difference


@dataclass(frozen=True)
class Allowed:
    key: str  # short stable name; the heading of its docs/compatibility.md entry
    reason: str
    aspect: str | tuple = ""   # an aspect of compare.ASPECTS, or a tuple of them
    where: str = "*"
    case: str = "*"
    rust: str = "*"
    ours: str = "*"

    def matches(self, d: Difference) -> bool:
        return (glob_match(d.aspect, self.aspect) and glob_match(d.case, self.case) and glob_match(d.where, self.where)
                and glob_match(d.rust, self.rust) and glob_match(d.ours, self.ours))


def glob_match(value: str, pattern) -> bool:
    """``pattern``: one glob, or a tuple of globs any of which may match."""
    if isinstance(pattern, tuple):
        return any(fnmatchcase(value, p) for p in pattern)
    return fnmatchcase(value, pattern)


ALLOWED: tuple = (
    Allowed(
        key="request-body-verbatim",
        reason="smg-proxy forwards the client's JSON body byte for byte (no second parse or "
               "re-serialisation on the hot path); the Rust SMG decodes it into its typed request "
               "and re-encodes it, adding the defaults of fields the client left out "
               "(e.g. \"stream\": false, \"logprobs\": false), turning an explicit null into that "
               "default or dropping it, and dropping top-level fields its type does not have. The "
               "worker applies the same defaults and sees the fields the client sent.",
        aspect="worker-body", where="$.*", ours=("absent", "null", "as sent")),
    Allowed(
        key="upstream-accept-default",
        reason="The Rust SMG's HTTP client (reqwest) adds \"Accept: */*\" to every request it sends "
               "a worker; smg-proxy adds no Accept header of its own (workers answer JSON or SSE "
               "whatever the Accept).",
        aspect="worker-header", where="accept", rust="forwarded", ours="absent"),
    Allowed(
        key="decode-error-position",
        reason="For the routes answered with a plain-text refusal when the body does not decode "
               "(embeddings, rerank, classify...), the Rust SMG's message ends with its JSON decoder's "
               "position (\" at line 1 column 22\"); smg-proxy's message is the same without it: its "
               "decoder (orjson) reports no position in those terms, and no client acts on it.",
        aspect="body-text", where="$ position", rust="at line * column *", ours="none"),
    Allowed(
        key="no-content-type-is-json",
        reason="A request with a body and no Content-Type header is read as JSON by smg-proxy (and "
               "answered normally); the Rust SMG refuses it (400 json_parse_error, or 415 on the "
               "plain-text routes). Clients and scripts that omit the header keep working; a "
               "Content-Type naming another type is refused as SMG does.",
        aspect=("status", "content-type", "header", "body", "body-text", "worker-request"),
        case="bad input: *: no content type"),
    Allowed(
        key="json-decoder-wording",
        reason="For a body that is not JSON (empty, truncated, invalid UTF-8, not an object) both "
               "gateways answer the same status, code and message prefix; the decoder's own words "
               "after it differ (orjson's vs serde_json's).",
        aspect="body-text", where="$",
        case=("bad input: *: empty body", "bad input: *: not JSON", "bad input: *: truncated",
              "bad input: *: invalid UTF-8", "bad input: *: JSON array")),
    Allowed(
        key="model-card-extra-fields",
        reason="smg-proxy's /v1/models and /v1/models/{id} entries keep the worker's own "
               "`root` and `max_model_len` besides SMG's fields (additive; the OpenAI SDKs ignore "
               "unknown fields).",
        aspect="body", where=("$.data[].max_model_len", "$.data[].root", "$.max_model_len", "$.root"),
        rust="absent"),
    Allowed(
        key="get-loads-summary",
        reason="smg-proxy's /get_loads answer adds a per-worker summary (`workers`, `successful`, "
               "`failed`, `total_workers`) to SMG's fields: which workers answered the fan-out.",
        case="GET /get_loads", aspect="body", where=("$.failed", "$.successful", "$.total_workers", "$.workers"),
        rust="absent"),
    Allowed(
        key="model-less-request-worker",
        reason="A request naming no model (/generate, /v1/rerank) may go to any worker. In the "
               "suite's rig (a mock worker serving mock-model, the echo worker serving echo-model) "
               "the Rust SMG sent such requests to one worker for a whole run (which one varied between "
               "runs), while smg-proxy rotates "
               "them over all ready workers (round_robin), so half of them reach the mock worker "
               "and the echo worker's count differs. Why SMG picks that worker is not yet known "
               "(with two workers of one model it rotates too).",
        aspect="worker-request", where="count", rust=("0", "1"), ours=("0", "1"),
        case=("bad input: generate: *", "bad input: v1_rerank: *", "POST /v1/rerank", "POST /generate*")),
    Allowed(
        key="engine-detection-order",
        reason="The mock worker answers both SGLang's /get_server_info (with model_path) and a "
               "/version holding only \"version\". The Rust SMG takes /version first and treats it "
               "as vLLM; smg-proxy takes the most specific evidence first and treats it as SGLang, "
               "so the engine facts SGLang's server info gives (tp_size, dp_size, context_length, "
               "is_generation, tokenizer_path) appear in its labels and model card.",
        case="workers: *", aspect="body",
        # fnmatch globs: "[[]]" is a literal "[]"
        where=("$.workers[[]].labels.*", "$.labels.*", "$.workers[[]].models[[]].tokenizer_path",
               "$.models[[]].tokenizer_path"),
        rust="absent", ours="string"),
    Allowed(
        key="tokio-runtime-metrics",
        reason="smg_tokio_* describe the Rust gateway's Tokio scheduler (workers, parks, queue "
               "depth, loop stalls); smg-proxy runs on one uvloop event loop, which has none of these.",
        aspect="metric", case="metrics", where="smg_tokio_* missing"),
    Allowed(
        key="allocator-metrics",
        reason="smg_allocator_* are jemalloc's statistics; smg-proxy uses CPython's allocator.",
        aspect="metric", case="metrics", where="smg_allocator_* missing"),
    Allowed(
        key="tokenizer-metrics",
        reason="smg_tokenizer_* and smg_detokenize_prefix_mismatch_total count the gateway's own "
               "tokenizer and detokenizer (the gRPC path); smg-proxy's HTTP path sends text to "
               "the workers and tokenizes nothing, so it has no such counts.",
        aspect="metric", case="metrics",
        where=("smg_tokenizer_* missing", "smg_detokenize_prefix_mismatch_total missing")),
    Allowed(
        key="history-storage-metrics",
        reason="smg_history_memory_records counts the records of the in-memory history backend "
               "(Responses/Conversations storage); smg-proxy has no history storage yet.",
        aspect="metric", case="metrics", where="smg_history_memory_records missing"),
    Allowed(
        key="request-body-path-metric",
        reason="smg_router_request_body_path_total counts the Rust SMG's choice between streaming "
               "a request body through and buffering it; smg-proxy always buffers and parses the "
               "body, so there is no decision to count.",
        aspect="metric", case="metrics", where="smg_router_request_body_path_total missing"),
    Allowed(
        key="worker-overload-metrics",
        reason="smg_worker_overload_fallback_total and smg_worker_overload_shed_total count the "
               "decisions of worker overload protection (every worker of a model overloaded: "
               "shed, or route to the least loaded); smg-proxy has no overload protection yet "
               "(its --worker-overload-* settings are accepted at their defaults only).",
        aspect="metric", case="metrics",
        where=("smg_worker_overload_fallback_total missing", "smg_worker_overload_shed_total missing")),
    Allowed(
        key="liveness-fallback-metric",
        reason="smg_worker_liveness_fallback_total counts requests routed past the Rust SMG's "
               "liveness tracker (which vetoes workers that stopped answering); smg-proxy has no "
               "liveness tracker, so nothing is vetoed and nothing falls back.",
        aspect="metric", case="metrics", where="smg_worker_liveness_fallback_total missing"),
    Allowed(
        key="http2-listener-metrics",
        reason="smg_http2_* and smg_http_protocol_connections_active describe smg-proxy's own "
               "HTTP/2 listener (streams, resets, GOAWAY, connections by protocol); additive "
               "families the Rust SMG has no counterpart of.",
        aspect="metric", case="metrics",
        where=("smg_http2_* extra", "smg_http_protocol_connections_active extra")),
    Allowed(
        key="discovery-metrics-always",
        reason="smg-proxy registers the smg_discovery_* families whether or not service discovery "
               "is on (zero without it); the Rust SMG registers them only with discovery on.",
        aspect="metric", case="metrics", where="smg_discovery_* extra"),
    Allowed(
        key="http-stream-timing-metrics",
        reason="smg_router_ttft_seconds, _tpot_seconds, _tokens_total and "
               "_generation_duration_seconds are filled by the Rust SMG on its gRPC path only; "
               "smg-proxy measures them on the HTTP streams it relays (SMG's names and labels), "
               "so they are additive here.",
        aspect="metric", case="metrics",
        where=("smg_router_ttft_seconds extra", "smg_router_tpot_seconds extra", "smg_router_tokens_total extra",
               "smg_router_generation_duration_seconds extra")),
    Allowed(
        key="worker-connections-metric",
        reason="smg_worker_connections_active (an SMG 1.9 family) has no series in the Rust SMG "
               "1.13 on its HTTP path; smg-proxy exports its open upstream connections by "
               "worker_type and connection_mode (additive).",
        aspect="metric", case="metrics", where="smg_worker_connections_active extra"),
    Allowed(
        key="workers-info-extras",
        reason="smg's extra WorkerInfo fields, additive, documented: circuit_breaker (the worker's "
               "breaker state and counts), health and resilience (its spec's sections) and "
               "has_api_key (whether a key is set, the key itself never shown).",
        aspect="body", case="workers: GET /workers*",
        where=tuple(f"$.{p}{f}" for p in ("", "workers[].")
                    for f in ("circuit_breaker", "health", "resilience", "has_api_key")),
        rust="absent"),
    Allowed(
        key="workers-stats-extras",
        reason="smg's extra GET /workers stats, additive, documented: total_workers, "
               "healthy_workers, total_models, total_load and by_type (older SMG's stats) next to "
               "1.13's prefill_count, decode_count and regular_count.",
        aspect="body", case="workers: GET /workers*",
        where=("$.stats.total_workers", "$.stats.healthy_workers", "$.stats.total_models",
               "$.stats.total_load", "$.stats.by_type"),
        rust="absent"),
    Allowed(
        key="workers-patch-applied-at-once",
        reason="smg applies a PATCH /workers/{id} before answering 202, so the next GET already "
               "shows the change and no UpdateWorker job is left running; the Rust SMG queues it "
               "and shows its job_status until its job queue has run it.",
        aspect="body", case="workers: GET /workers/{id} after PATCH", where="$.job_status",
        rust="object", ours="absent"),
    Allowed(
        key="max-connection-attempts",
        reason="smg does not take WorkerSpec max_connection_attempts (a POST naming it is refused "
               "with 400), so WorkerInfo does not report it: registration retries, with backoff, "
               "until the worker answers or is deleted, and reporting a bound it does not apply "
               "would be untrue.",
        aspect="body", case="workers: GET /workers*",
        where=("$.max_connection_attempts", "$.workers[].max_connection_attempts"),
        rust="number", ours="absent"),
)


def match(d: Difference) -> Allowed | None:
    for entry in ALLOWED:
        if entry.matches(d):
            return entry
    return None
