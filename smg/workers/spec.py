"""WorkerSpec: the body of ``POST /workers`` (SMG's field names), validated.

Every error names the offending field (``health.timeout_secs``), so the API can
answer 400 with it. ``api_key`` is write-only: ``public()`` never includes it.
A worker URL is a server's base URL: a trailing ``/v1`` is dropped (logged), any other
path is refused. A ``grpc://``/``grpcs://`` URL (or ``connection_mode: "grpc"``) is a
gRPC worker (smg/workers/grpc_registration.py); its runtime is ``unspecified``
(detected), ``sglang`` or ``vllm``, and a ``grpc(s)://`` URL with ``connection_mode:
"http"`` is refused as contradictory. A spec that validates builds its worker: every
bound the circuit breaker and the retry policy enforce is checked here first
(``_BOUNDS``). ``WORKER_TYPES`` is declared here only (discovery and the registry
import it).
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

log = logging.getLogger("smg.workers")

WORKER_TYPES = ("regular", "prefill", "decode", "encode")
CONNECTION_MODES = ("http", "grpc")
GRPC_RUNTIMES = ("unspecified", "sglang", "vllm")  # the engines smg speaks gRPC to
RUNTIMES = ("unspecified", "sglang", "vllm", "trtllm", "mlx", "tokenspeed", "external",
            # engines recognised over HTTP (smg/workers/engines.py)
            "llama_cpp", "llama_cpp_python", "ollama", "tgi", "openai")
DEFAULT_PRIORITY = 50   # SMG's WorkerSpec defaults
DEFAULT_COST = 1.0

# The top-level WorkerSpec fields this gateway acts on; any other field is refused, so
# none is accepted and then ignored.
SPEC_FIELDS = frozenset(("url", "models", "worker_type", "connection_mode", "runtime_type", "runtime", "labels",
                         "priority", "cost", "api_key", "bootstrap_port", "dp_rank", "dp_size", "health",
                         "resilience"))

_HEALTH = {"timeout_secs": float, "check_interval_secs": float, "success_threshold": int,
           "failure_threshold": int, "disable_health_check": bool, "drain_settle_secs": float}
_RESILIENCE = {"max_retries": int, "initial_backoff_ms": float, "max_backoff_ms": float,
               "backoff_multiplier": float, "jitter_factor": float, "disable_retry": bool,
               "cb_failure_threshold": int, "cb_success_threshold": int, "cb_timeout_secs": float,
               "cb_window_secs": float, "disable_circuit_breaker": bool, "retryable_status_codes": list}
# field -> (lowest, highest) allowed (None: unbounded), beyond "not negative".
_BOUNDS = {"health.success_threshold": (1, None), "health.failure_threshold": (1, None),
           "resilience.backoff_multiplier": (1.0, None), "resilience.jitter_factor": (0.0, 1.0),
           "resilience.cb_failure_threshold": (1, None), "resilience.cb_success_threshold": (1, None)}


class SpecError(ValueError):
    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field


def _typed(field: str, value, kind):
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(field, "must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(field, "must be an integer")
        if value < 0:
            raise SpecError(field, "must not be negative")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(field, "must be a number")
        if value < 0:
            raise SpecError(field, "must not be negative")
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise SpecError(field, "must be an array of integers")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise SpecError(field, "must be a string")
        return value
    raise AssertionError(kind)


def _section(name: str, value, fields: dict) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(name, "must be an object")
    out = {}
    for k, v in value.items():
        kind = fields.get(k)
        if kind is None:
            raise SpecError(f"{name}.{k}", "unknown field")
        if v is not None:
            field = f"{name}.{k}"
            out[k] = _typed(field, v, kind)
            lo, hi = _BOUNDS.get(field, (None, None))
            if (lo is not None and out[k] < lo) or (hi is not None and out[k] > hi):
                raise SpecError(field, f"must be {'at least ' + str(lo) if hi is None else f'in [{lo}, {hi}]'}")
    if name == "resilience" and any(not 100 <= c <= 599 for c in out.get("retryable_status_codes", ())):
        raise SpecError("resilience.retryable_status_codes", "must be HTTP status codes (100-599)")
    return out


def _models(value) -> list:
    """A list of ModelCards (``{"id": ...}``); bare strings are accepted as ids."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError("models", "must be an array")
    cards = []
    for i, m in enumerate(value):
        if isinstance(m, str):
            m = {"id": m}
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
            raise SpecError(f"models[{i}]", "must be a model card with a string 'id'")
        cards.append(dict(m))
    return cards


def validate(body, partial: bool = False) -> dict:
    """Returns a normalized spec dict.

    Args:
        partial: PATCH semantics: only ``priority``, ``cost``, ``labels``, ``api_key`` and
            ``health`` may appear, none is required.
    Raises:
        SpecError: naming the first bad field.
    """
    if not isinstance(body, dict):
        raise SpecError("body", "must be a JSON object")
    if not partial:
        for k in body:
            if k not in SPEC_FIELDS:
                raise SpecError(k, "unknown field (or one this gateway does not support)")
    if partial:
        allowed = {"priority", "cost", "labels", "api_key", "health"}
        for k in body:
            if k not in allowed:
                raise SpecError(k, "cannot be changed with PATCH (use PUT)")
    spec: dict = {}
    if not partial:
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise SpecError("url", "is required and must be a string")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise SpecError("url", f"{url!r} is not a http(s):// or grpc(s):// URL")
        try:
            parts.port
        except ValueError:
            raise SpecError("url", f"{url!r} has an invalid port") from None
        url = url.rstrip("/")
        path = parts.path.rstrip("/")
        if path == "/v1":  # the OpenAI base URL users copy: the server is its parent
            url = url[: -len("/v1")]
            log.info("worker url %r: the trailing /v1 is dropped (requests carry their own /v1 path): %s",
                     body["url"], url)
        elif path or parts.query or parts.fragment:
            raise SpecError("url", f"{body['url']!r} has a path, query or fragment; give the server's base URL "
                                   "(scheme://host:port); a trailing /v1 alone is accepted and dropped")
        spec["url"] = url
        spec["models"] = _models(body.get("models"))
        wt = body.get("worker_type", "regular")
        if wt not in WORKER_TYPES:
            raise SpecError("worker_type", f"must be one of {', '.join(WORKER_TYPES)}")
        spec["worker_type"] = wt
        mode = body.get("connection_mode") or ("grpc" if parts.scheme.startswith("grpc") else "http")
        if mode not in CONNECTION_MODES:
            raise SpecError("connection_mode", f"must be one of {', '.join(CONNECTION_MODES)}")
        if mode == "http" and parts.scheme.startswith("grpc"):
            raise SpecError("connection_mode", f"'http' contradicts the {parts.scheme}:// URL")
        spec["connection_mode"] = mode
        runtime = body.get("runtime_type", body.get("runtime", "unspecified"))
        if runtime not in RUNTIMES:
            raise SpecError("runtime_type", f"must be one of {', '.join(RUNTIMES)}")
        if mode == "grpc" and runtime not in GRPC_RUNTIMES:
            raise SpecError("runtime_type", f"a grpc worker's runtime must be one of {', '.join(GRPC_RUNTIMES)}")
        spec["runtime_type"] = runtime
        for f in ("bootstrap_port", "dp_rank", "dp_size"):
            if body.get(f) is not None:
                spec[f] = _typed(f, body[f], int)
        if spec.get("dp_size") == 0:
            raise SpecError("dp_size", "must be at least 1")
        if "dp_rank" in spec and spec["dp_rank"] >= spec.get("dp_size", 1 << 30):
            raise SpecError("dp_rank", "must be below dp_size")
        spec["resilience"] = _section("resilience", body.get("resilience"), _RESILIENCE)
    if "priority" in body or not partial:
        spec["priority"] = _typed("priority", body.get("priority", DEFAULT_PRIORITY), int)
    if "cost" in body or not partial:
        spec["cost"] = _typed("cost", body.get("cost", DEFAULT_COST), float)
    if "labels" in body or not partial:
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in labels.items()):
            raise SpecError("labels", "must be an object of string values")
        spec["labels"] = dict(labels)
    if body.get("api_key") is not None:
        spec["api_key"] = _typed("api_key", body["api_key"], str)
        if any(c in spec["api_key"] for c in "\r\n") or not spec["api_key"].isascii():
            raise SpecError("api_key", "must be printable ASCII")
    if "health" in body or not partial:
        spec["health"] = _section("health", body.get("health"), _HEALTH)
    return spec


def public(spec: dict) -> dict:
    """The spec as the API shows it: ``api_key`` removed."""
    return {k: v for k, v in spec.items() if k != "api_key"}
