"""How a mock worker behaves: ``MockConfig`` and the validation of changes to it.

Rules:
- Every setting is a field of ``MockConfig``; the CLI flags (``cli.py``) and
  ``POST /_mock/config`` (``endpoints.py``) change the same fields.
- A change from outside goes through ``MockConfig.update``, which checks every key
  before applying any (all or nothing).
- Every assignment bumps ``_version``; the worker compares it with the version its
  answer templates were rendered for and re-renders on a mismatch, so a test may
  assign fields directly at any time.

Failure injection (inference endpoints only; ``/health`` follows ``health_status``):
``fail_mode`` None with ``fail_status`` set means "status"; each inference request
fails with probability ``fail_rate`` (default 1.0):
- "status": answer ``fail_status`` (500 if unset) with an OpenAI (or, for
  ``/v1/messages``, Anthropic) error body;
- "reset": abort the TCP connection with an RST before answering;
- "cut": send the head and ``cut_after_chunks`` SSE events (a non-streaming request:
  half its body) then abort: the client sees an incomplete body;
- "hang": never answer (the connection stays open until the client leaves or the
  worker stops).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

FAIL_MODES = (None, "status", "reset", "cut", "hang")


@dataclass
class MockConfig:
    """Behaviour of a mock worker; may be changed at any time (also via POST /_mock/config).

    Attributes:
        model: model id served (``/v1/models``); responses echo the request's model.
        worker_id: ``x-mock-worker`` header value; empty → ``mock-<port>`` at start.
        ttft: seconds before the first token (streams) or added to the answer (non-streaming).
        token_delay: seconds between tokens (non-streaming: ``num_chunks`` × this, added).
        num_chunks: content tokens/chunks per answer.
        fail_status: None, or the status every inference request fails with.
        fail_rate: probability (0..1) that an inference request fails when failure is set.
        fail_mode: None | "status" | "reset" | "cut" | "hang" (module docstring).
        cut_after_chunks: SSE events sent before a "cut" aborts the stream.
        embedding_dim: length of ``/v1/embeddings`` vectors.
        health_status: status of ``/health``, ``/health_generate``, ``/readiness``.
        admin_status: status of the engine control routes (``/flush_cache``,
            ``/start_profile``, ``/stop_profile``); not 200 makes them fail as SGLang does
            (a plain-text refusal), so a gateway's fan-out sees a partial result.
        num_labels: classes of ``/v1/classify`` (labels ``LABEL_0`` .. ``LABEL_{n-1}``).
        owned_by: ``owned_by`` in ``/v1/models``. SMG (Rust) reads it to detect the engine:
            "sglang" or "vllm" are taken at their word; anything else makes it probe
            ``/version`` (served here, so it settles on vllm).
    """

    model: str = "mock-model"
    worker_id: str = ""
    ttft: float = 0.0
    token_delay: float = 0.0
    num_chunks: int = 8
    fail_status: int | None = None
    fail_rate: float = 1.0
    fail_mode: str | None = None
    cut_after_chunks: int = 2
    embedding_dim: int = 8
    health_status: int = 200
    admin_status: int = 200
    num_labels: int = 2
    owned_by: str = "mock"

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        # Every assignment bumps the version; the worker rebuilds its templates on change.
        object.__setattr__(self, "_version", getattr(self, "_version", 0) + 1)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, changes: dict) -> None:
        """Validates and applies ``changes`` (a JSON merge).

        Raises:
            ValueError: an unknown key or a value of the wrong type or range; nothing applied.
        """
        if not isinstance(changes, dict):
            raise ValueError("config must be a JSON object")
        known = {f.name for f in fields(self)}
        checked = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}")
            checked[key] = _check_field(key, value)
        for key, value in checked.items():
            setattr(self, key, value)


def _check_field(key: str, value: Any) -> Any:
    def bad(what: str) -> ValueError:
        return ValueError(f"{key}: {what}, got {value!r}")

    if key in ("model", "worker_id", "owned_by"):
        if not isinstance(value, str):
            raise bad("expected a string")
        return value
    if key in ("ttft", "token_delay"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise bad("expected seconds >= 0")
        return float(value)
    if key == "fail_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise bad("expected a probability in [0, 1]")
        return float(value)
    if key in ("num_chunks", "cut_after_chunks"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("expected an integer >= 0")
        return value
    if key == "embedding_dim":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("expected an integer >= 1")
        return value
    if key == "num_labels":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise bad("expected an integer in [1, 1000]")
        return value
    if key in ("fail_status", "health_status", "admin_status"):
        if value is None and key == "fail_status":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise bad("expected an HTTP status")
        return value
    if key == "fail_mode":
        if value not in FAIL_MODES:
            raise bad(f"expected one of {FAIL_MODES}")
        return value
    raise bad("unknown key")  # pragma: no cover - guarded by update()
