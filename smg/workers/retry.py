"""Router-level retry policy (sans-I/O): which outcomes are retried, and how long to wait.

Semantics (SMG 1.9 / ``smg launch --help`` 1.13):

- ``max_retries`` is the number of *attempts in total*, not of retries; it is at
  least 1, and ``--disable-retries`` means 1. Each attempt re-runs worker selection
  (the caller's job).
- An outcome is retryable when its status is in ``retryable_status`` (408, 429, 500,
  502, 503, 504 by default) or it is a transport error: SMG turns those into 500
  before the retry decision, so they are retried too. A response that has started
  streaming (status 200 sent to the client) is never retried, since only the status
  is looked at.
- The delay before attempt ``n + 1`` (``n`` = 0-based index of the attempt that just
  failed) is ``min(initial x multiplier^n, max)``, then moved by a uniform jitter of
  +- ``jitter_factor x delay`` (never below 0).

Which worker is tried next (measured on SMG 1.13): after a **500** the worker that
answered it is left out for the rest of the request (``EXCLUDING_STATUS``), so a
request gets at most as many 500-attempts as there are workers; after 408, 429, 502,
503, 504 or a transport error any worker may be tried again.

Request-caused answers (``request_caused``, ``RequestFaults``): an answer that depends
on the request, not on the worker, is relayed at once, not retried, and not counted by
the circuit breaker: a 4xx (never retried except 408/429, as above), a 5xx whose body
carries a validation message, and a 5xx this request got identically from two workers
unless another request got that same answer lately (a failure shared across requests
is the workers', e.g. a broken model on every worker).

Rules: the numbers come from the settings table (``from_config``: the ``retry_*``
settings); the dataclass restates no default. ``RETRYABLE_STATUS`` is declared here
only (the circuit breaker imports it). A worker registered with retry fields in its
WorkerSpec ``resilience`` section gets its own policy (``for_worker``), the gateway's
with those fields over it; the exchange uses ``worker.retry or gateway_policy`` for the
attempt that worker served.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from hashlib import blake2b

RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)
#: A worker that answered this status is not tried again for the same request.
EXCLUDING_STATUS = 500

# What a 5xx body says when the request, not the worker, is at fault: engines that
# raise on bad input and answer 500 (validation errors, bad values, prompts over the
# context length), or that say so in an OpenAI-style error object.
_VALIDATION = re.compile(
    rb"validation|badrequest|bad request|unprocessable|invalid_request"
    rb"|invalid (?:request|input|argument|parameter|value|type|json|prompt|schema|role|format|model)"
    rb"|must be (?:a |an |one of|between|at least|at most|greater|less|positive|non-negative|\d)"
    rb"|is not (?:a )?valid|field required|is required|missing required"
    rb"|context length|context window|maximum context|too long|too many tokens"
    rb'|"code": ?4\d\d\b',
    re.IGNORECASE)
#: Bytes of a 5xx body looked at.
VALIDATION_SCAN_BYTES = 4096


def request_caused(status: int, body: bytes) -> bool:
    """A 5xx whose body carries a validation message (the request is at fault)."""
    return status >= 500 and _VALIDATION.search(body[:VALIDATION_SCAN_BYTES]) is not None


_SHARED = b""  # no request id is empty (smg/api/request_id.py): marks a shared answer


class RequestFaults:
    """Recent 5xx answers judged request-caused because two workers gave this request
    the same one; a second request getting the same answer within ``window`` seconds
    makes it a shared failure (the workers'). Bounded: at most ``max_entries``."""

    __slots__ = ("window", "max_entries", "seen")

    def __init__(self, window: float = 60.0, max_entries: int = 1024) -> None:
        self.window = window
        self.max_entries = max_entries
        self.seen: dict = {}   # digest of (status, body) -> (request id, time)

    @staticmethod
    def digest(status: int, body: bytes) -> bytes:
        return blake2b(b"%d:" % status + body, digest_size=16).digest()

    def identical_is_request_caused(self, digest: bytes, rid: bytes, now: float) -> bool:
        """Two workers gave request ``rid`` the answer ``digest``: True if no other
        request got it within the window (then it is remembered for ``rid``)."""
        seen = self.seen
        prev = seen.get(digest)
        if prev is not None and prev[0] != rid and now - prev[1] < self.window:
            seen[digest] = (_SHARED, now)   # shared from now on, for every request
            return False
        if len(seen) >= self.max_entries:
            cutoff = now - self.window
            for k in [k for k, (_, t) in seen.items() if t < cutoff] or list(seen)[: self.max_entries // 2]:
                del seen[k]
        seen[digest] = (rid, now)
        return True

# WorkerSpec ``resilience`` field -> RetryPolicy field (``disable_retry`` is handled apart).
RESILIENCE_FIELDS = {"max_retries": "max_retries", "initial_backoff_ms": "initial_backoff_ms",
                     "max_backoff_ms": "max_backoff_ms", "backoff_multiplier": "multiplier",
                     "jitter_factor": "jitter_factor", "retryable_status_codes": "retryable_status"}


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    initial_backoff_ms: float
    max_backoff_ms: float
    multiplier: float
    jitter_factor: float
    retryable_status: tuple = RETRYABLE_STATUS

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_retries", max(1, int(self.max_retries)))
        object.__setattr__(self, "retryable_status", frozenset(self.retryable_status))
        if self.initial_backoff_ms < 0 or self.max_backoff_ms < 0:
            raise ValueError("retry backoff must not be negative")
        if self.multiplier < 1.0:
            raise ValueError("retry backoff multiplier must be at least 1")
        if not 0.0 <= self.jitter_factor <= 1.0:
            raise ValueError("retry jitter factor must be in [0, 1]")

    def without_retries(self) -> RetryPolicy:
        """This policy with one attempt, no retries (``--disable-retries``)."""
        return dataclasses.replace(self, max_retries=1)

    @classmethod
    def from_config(cls, config) -> RetryPolicy:
        """From gateway settings (``retry_*`` and ``disable_retries``)."""
        p = cls(max_retries=config.retry_max_retries, initial_backoff_ms=config.retry_initial_backoff_ms,
                max_backoff_ms=config.retry_max_backoff_ms, multiplier=config.retry_backoff_multiplier,
                jitter_factor=config.retry_jitter_factor)
        return p.without_retries() if config.disable_retries else p

    def for_worker(self, resilience: dict | None) -> RetryPolicy | None:
        """The policy of a worker whose WorkerSpec ``resilience`` section has retry fields:
        this (the gateway's) policy with them over it; None when it has none (the worker
        uses the gateway's policy).

        Raises:
            ValueError: the fields make an invalid policy (as the constructor).
        """
        res = resilience or {}
        changes = {RESILIENCE_FIELDS[k]: v for k, v in res.items() if k in RESILIENCE_FIELDS}
        if not changes and "disable_retry" not in res:
            return None
        if res.get("disable_retry"):
            changes["max_retries"] = 1
        return dataclasses.replace(self, **changes)

    def base_delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``, without jitter."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        ms = self.initial_backoff_ms
        cap = self.max_backoff_ms
        # Multiply step by step and stop at the cap: multiplier ** attempt overflows a
        # float for large attempt numbers.
        for _ in range(attempt):
            if ms >= cap:
                break
            ms *= self.multiplier
        return min(ms, cap) / 1000.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (jittered).

        Args:
            attempt: 0-based index of the attempt that just failed.
            rng: a ``random.Random`` (module ``random`` when None).
        """
        d = self.base_delay(attempt)
        if self.jitter_factor and d:
            j = self.jitter_factor * d
            d += (rng or random).uniform(-j, j)
        return max(0.0, d)

    def is_retryable(self, status: int) -> bool:
        return status in self.retryable_status

    def is_retryable_outcome(self, status_or_error) -> bool:
        """An int is a status; None or an exception is a transport error (retryable)."""
        if isinstance(status_or_error, int) and not isinstance(status_or_error, bool):
            return status_or_error in self.retryable_status
        return True

    def should_retry(self, attempt: int, status_or_error) -> bool:
        """Whether to make another attempt.

        Args:
            attempt: 0-based index of the attempt that just finished.
            status_or_error: its status, or None / the exception for a transport error.
        """
        return attempt + 1 < self.max_retries and self.is_retryable_outcome(status_or_error)
