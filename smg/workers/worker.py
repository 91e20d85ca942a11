"""The record of one worker (an inference server the gateway routes to).

Rule: a worker has two names. ``url`` is its logical key: what metric labels, the
Workers API, policies and hash rings see; for one rank of a data-parallel server it is
SMG's ``"{base_url}@{rank}"``. ``base_url`` is its network address: every probe,
poll and connection (health checks, load polls, registration, the pool) uses it, and
nothing else is ever parsed as an address.

A worker speaks HTTP or gRPC (``connection_mode``). A gRPC worker (``grpc://``) has
``channel``, its ``smg.engine_grpc.client.EngineChannel`` (one per base address,
shared by its DP ranks; set at registration, closed at removal), and ``runtime`` (alias
``runtime_type``) "sglang" or "vllm"; an HTTP worker's ``channel`` is None. Every
worker has a ``pool`` (an HTTP worker's keep-alive connections; a gRPC worker's is
never dialled), so code that walks every worker's pool needs no case.
"""
from __future__ import annotations

import itertools
from urllib.parse import urlsplit

# Worker statuses (SMG's names). Only READY workers receive traffic.
PENDING = "pending"
READY = "ready"
NOT_READY = "not_ready"
FAILED = "failed"
DRAINING = "draining"

_ids = itertools.count(1)


class Worker:
    """One worker.

    ``url`` (the argument) is the server's base URL; with ``dp_rank`` the worker is that
    rank's logical worker and ``self.url`` becomes ``"{url}@{dp_rank}"``. ``models`` is
    the tuple of model ids it serves; empty means it accepts any model (a wildcard, as
    SMG treats a worker whose models are unknown). ``inflight`` is the gateway-local
    count of requests dispatched to it and not yet finished.
    """

    __slots__ = ("id", "url", "host", "port", "host_header", "models", "model_cards", "status",
                 "inflight", "processed", "pool", "worker_type", "engine", "breaker", "breaker_open",
                 "api_key", "spec", "runtime", "dp_rank", "dp_size", "base_url", "retry", "connection_mode",
                 "channel", "parse_output", "__weakref__")

    def __init__(self, url: str, models: tuple = (), worker_id: str | None = None,
                 worker_type: str = "regular", dp_rank: int | None = None,
                 connection_mode: str | None = None) -> None:
        parts = urlsplit(url)
        self.base_url = url.rstrip("/")
        self.url = self.base_url if dp_rank is None else f"{self.base_url}@{dp_rank}"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme in ("https", "grpcs") else 80)
        self.host_header = parts.netloc.encode("idna")
        self.id = worker_id or f"w{next(_ids)}"
        self.models = tuple(models)
        self.model_cards: list = []
        self.status = PENDING
        self.inflight = 0
        self.processed = 0
        self.pool = None
        self.worker_type = worker_type
        # Last load report from the engine (load monitor), SMG's field names, e.g.
        # {"token_usage": 0.4, "num_waiting_uncached_tokens": 900, "gen_throughput": 2500.0,
        #  "num_running_reqs": 3}; None when the engine has not reported.
        self.engine = None
        self.breaker = None        # smg.workers.breaker.CircuitBreaker, set by the gateway
        self.breaker_open = False  # kept by the breaker's transition callback
        self.api_key = None        # bytes: sent as Bearer to the worker; never echoed
        self.spec: dict = {}       # the WorkerSpec it was registered with (api_key removed)
        self.runtime = "unspecified"
        self.dp_rank = dp_rank     # DP-aware: this logical worker's rank on base_url
        self.dp_size = None
        self.retry = None          # smg.workers.retry.RetryPolicy from its spec, or None (the gateway's)
        self.connection_mode = connection_mode or ("grpc" if parts.scheme.startswith("grpc") else "http")
        self.channel = None        # gRPC workers: their EngineChannel, once registered
        self.parse_output = False  # HTTP workers: the gateway parses their chat answers (opt-in)

    @property
    def runtime_type(self) -> str:
        """The engine's runtime ("sglang", "vllm", ...; "unspecified" until known)."""
        return self.runtime

    @runtime_type.setter
    def runtime_type(self, value: str) -> None:
        self.runtime = value

    def set_parse_output(self, default: bool) -> None:
        """Whether the gateway runs the output parsers on this HTTP worker's chat
        answers: its ``parse_output`` label ("true"/"false") when it has one, else
        ``default`` (``--http-parse-output``)."""
        v = (self.spec.get("labels") or {}).get("parse_output")
        self.parse_output = default if v is None else str(v).lower() in ("true", "1", "yes", "on")

    def serves(self, model: str | None) -> bool:
        return model is None or not self.models or model in self.models

    def __repr__(self) -> str:
        return f"Worker({self.id}, {self.url}, {self.status}, inflight={self.inflight})"
