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
"""
from __future__ import annotations

import random
from dataclasses import dataclass

RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    initial_backoff_ms: float = 50
    max_backoff_ms: float = 30000
    multiplier: float = 1.5
    jitter_factor: float = 0.2
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

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries (``--disable-retries``)."""
        return cls(max_retries=1)

    @classmethod
    def from_config(cls, config) -> RetryPolicy:
        """From gateway settings (``retry_*`` and ``disable_retries``)."""
        g = lambda name, default: getattr(config, name, default)
        if g("disable_retries", False):
            return cls.disabled()
        return cls(max_retries=g("retry_max_retries", 5),
                   initial_backoff_ms=g("retry_initial_backoff_ms", 50),
                   max_backoff_ms=g("retry_max_backoff_ms", 30000),
                   multiplier=g("retry_backoff_multiplier", 1.5),
                   jitter_factor=g("retry_jitter_factor", 0.2))

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
