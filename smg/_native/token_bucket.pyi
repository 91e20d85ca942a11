"""Type stub for smg._native.token_bucket (the pure-Python twin
smg.admission.token_bucket_py has the same API; its module docstring states the rules:
fixed point in micro-tokens and microseconds, exact refill, injected clock, limits).
mypy's stubtest checks the twin and the compiled module against this stub
(tests/test_stubs.py)."""

from typing import final

__all__ = ["MAX_CAPACITY", "MAX_NOW", "MAX_REFILL_PER_SEC", "TICKS_PER_SEC", "TOKEN_SCALE", "TokenBuckets"]

TOKEN_SCALE: int  # micro-tokens per token (10**6): the resolution of a level
TICKS_PER_SEC: int  # clock ticks per second (10**6): the resolution of ``now``
MAX_CAPACITY: float  # tokens (1e12)
MAX_REFILL_PER_SEC: float  # tokens per second (9e6)
MAX_NOW: float  # seconds: the largest |now| accepted (1e12)

@final  # a cdef class marked @cython.final: not a base class
class TokenBuckets:
    """A table of token buckets addressed by slot index (0..n-1): no allocation per decision."""

    def __init__(self, n: int, capacity: float, refill_per_sec: float) -> None:
        """``n`` slots, every one full, with the same limits.

        Raises:
            ValueError: ``n`` < 0; capacity or refill negative, NaN or above its maximum.
        """
    def configure(self, slot: int, capacity: float, refill_per_sec: float) -> None:
        """Per-slot limits (tenant policies). Clamps the current level to the new capacity
        and never adds tokens (``reset`` fills); the time since the slot's last refill
        is credited at the new rate.

        Raises:
            IndexError: slot outside 0..n-1.
            ValueError: capacity or refill negative, NaN or above its maximum.
        """
    def try_acquire(self, slot: int, now: float, tokens: float = 1.0) -> bool:
        """Refill to ``now``, then take ``tokens`` if the bucket holds that many.

        Returns:
            True if taken, False (nothing taken) if not enough.
        Raises:
            IndexError: slot outside 0..n-1.
            ValueError: tokens negative or NaN; now NaN or beyond MAX_NOW.
        """
    def try_acquire_pair(self, other: TokenBuckets, slot: int, now: float, tokens: float,
                         other_tokens: float) -> bool:
        """``try_acquire(slot, now, tokens)`` here and ``other.try_acquire(slot, now,
        other_tokens)`` as one decision: both are taken, or neither (the same slot of two
        tables: a tenant's requests and its tokens). ``other`` is not refilled when this
        table is short.

        Returns:
            True if both were taken, False (nothing taken) if either is short.
        Raises:
            IndexError: slot outside 0..n-1 of either table.
            ValueError: a count negative or NaN; now NaN or beyond MAX_NOW.
        """
    def release(self, slot: int, tokens: float = 1.0) -> None:
        """Give ``tokens`` back (concurrency permits), never above capacity.

        Raises:
            IndexError: slot outside 0..n-1.
            ValueError: tokens negative or NaN.
        """
    def available(self, slot: int, now: float) -> float:
        """The level (tokens) after refilling to ``now``.

        Raises:
            IndexError, ValueError: as try_acquire.
        """
    def wait_time(self, slot: int, now: float, tokens: float = 1.0) -> float:
        """Seconds from ``now`` until ``tokens`` could be taken, rounded up to the
        microsecond (a ``now`` behind the slot's clock mark also waits for the mark): 0.0
        if now; inf if ``tokens`` exceeds the capacity, or the refill is 0 and the level
        is short. Refills to ``now``; takes nothing.

        Raises:
            IndexError, ValueError: as try_acquire.
        """
    def reset(self, slot: int) -> None:
        """Full again; the slot's clock restarts at the next ``now`` it sees.

        Raises:
            IndexError: slot outside 0..n-1.
        """
    def __len__(self) -> int: ...
