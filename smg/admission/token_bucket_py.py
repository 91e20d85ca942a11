"""Pure-Python twin of smg._native.token_bucket: a table of token buckets in fixed point.

Import from :mod:`smg.admission.token_bucket` (the selector), not from here. This
module is the reference arithmetic: the native module does the same integer steps, so
the two agree bit for bit (tests/native/test_token_bucket.py drives both with the same
random operations and compares every result).

Rules:

1. Fixed point. A bucket holds an integer number of micro-tokens (``TOKEN_SCALE`` =
   10**6 per token) and reads an integer clock of microseconds (``TICKS_PER_SEC`` =
   10**6 per second). A float argument ``x`` (tokens, capacity, rate, ``now``) becomes
   ``round(x * 10**6)``: one IEEE multiply, then round half to even, the same in C
   (``rint``) and in Python (``round``). Results go back as ``int / 1e6``.
2. Refill is exact. A slot's rate is R micro-tokens per second; ``e`` microseconds add
   ``e * R / 10**6`` micro-tokens, and the part below one micro-token is carried in
   ``frac`` (units of 10**-6 micro-token, 0 <= frac < 10**6), so refilling in many small
   steps gives what one big step gives: the level is always the floor of the exact
   rational level. A full bucket has no carry (refill, release and configure drop it
   when they reach capacity).
3. The clock is injected (``now``, seconds, monotonic); the module never reads one. A
   ``now`` at or before the slot's last refill adds nothing and leaves that mark where it
   is, so a clock that goes back never adds tokens, nor does it credit the same interval
   twice when it comes forward again. A slot that has never refilled (new, or just
   ``reset``) starts its clock at the first ``now`` it sees.
4. ``refill_per_sec == 0`` means no refill: tokens come back only through ``release``
   (a pure concurrency bound).
5. Levels stay in ``0 <= level <= capacity``: ``release`` and refill clamp at
   capacity, ``configure`` clamps the current level to the new capacity and never adds
   tokens (``reset`` fills a slot). ``configure`` has no clock: time since the slot's last
   refill is credited at the new rate on the next call (call ``available(slot, now)``
   first to settle it at the old one).
6. Limits, so every intermediate fits a signed 64-bit integer (the largest product is
   ``999_999 us * R``):
   - ``MAX_CAPACITY`` = 10**12 tokens (10**18 micro-tokens);
   - ``MAX_REFILL_PER_SEC`` = 9 * 10**6 tokens per second (540 M per minute);
   - ``|now| <= MAX_NOW`` = 10**12 seconds (about 31,700 years of uptime);
   - resolution: 10**-6 token, 1 microsecond.
   A capacity or rate that is negative, NaN or above its limit, a ``now`` that is NaN
   or beyond MAX_NOW, and a negative or NaN ``tokens`` raise ValueError; ``tokens``
   above MAX_CAPACITY is more than any bucket holds (acquire fails, wait is inf, release
   fills). A slot outside ``0..n-1`` raises IndexError.
7. ``wait_time`` is rounded up to the microsecond: after refilling to ``now``, the
   least whole number of microseconds after ``now`` at which the level reaches
   ``tokens`` (counted from the slot's clock mark, plus the gap if ``now`` is behind
   it); 0.0 if it already does; inf if ``tokens`` exceeds the capacity, or the rate is 0
   and the level is short. The float is ``a + (us - a * 10**6) / 1e6`` with ``a`` the
   whole seconds before the last one started (both twins compute exactly this). A caller
   adding it to a float ``now`` may land a microsecond short (float rounding of the
   sum); a retry then waits one more microsecond.
8. ``try_acquire_pair(other, slot, now, a, b)`` is ``try_acquire(slot, now, a)`` on this
   table and ``try_acquire(slot, now, b)`` on ``other`` as one decision (a tenant's
   requests and tokens): both are taken or neither. Every argument is checked before
   anything changes; ``other`` is not refilled when this table is short (a refill
   skipped is unobservable anyway, rule 2).
"""
from __future__ import annotations

from typing import final

# The API shared with smg._native.token_bucket (its stub, token_bucket.pyi).
__all__ = ["MAX_CAPACITY", "MAX_NOW", "MAX_REFILL_PER_SEC", "TICKS_PER_SEC", "TOKEN_SCALE", "TokenBuckets"]

TOKEN_SCALE = 1_000_000  # micro-tokens per token
TICKS_PER_SEC = 1_000_000  # clock ticks (microseconds) per second
MAX_CAPACITY = 1e12  # tokens: 10**18 micro-tokens < 2**63
MAX_REFILL_PER_SEC = 9e6  # tokens/s: 999_999 us * 9 * 10**12 micro-tokens/s < 2**63
MAX_NOW = 1e12  # seconds: a clock difference stays under 2 * 10**18 us

_SCALE = TOKEN_SCALE
_MAX_U = 10**18  # MAX_CAPACITY in micro-tokens
_OVER = _MAX_U + 1  # a request larger than any capacity
_NEVER = -(2**63)  # `last` of a slot that has not refilled yet
_INF = float("inf")


def _limit(name: str, value: float, high: float) -> int:
    if not 0.0 <= value <= high:  # also refuses NaN
        raise ValueError(f"{name} must be between 0 and {high:g}, got {value!r}")
    return round(value * 1e6)


def _tokens(tokens: float) -> int:
    if not tokens >= 0.0:
        raise ValueError(f"tokens must be >= 0, got {tokens!r}")
    if tokens > MAX_CAPACITY:
        return _OVER
    return round(tokens * 1e6)


def _ticks(now: float) -> int:
    if not -MAX_NOW <= now <= MAX_NOW:
        raise ValueError(f"now must be a finite clock reading within {MAX_NOW:g} s, got {now!r}")
    return round(now * 1e6)


@final  # as the native class (@cython.final)
class TokenBuckets:
    """A table of token buckets addressed by slot index (0..n-1): no allocation per decision."""

    __slots__ = ("_n", "_level", "_cap", "_rate", "_frac", "_last")

    def __init__(self, n: int, capacity: float, refill_per_sec: float) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        cap = _limit("capacity", capacity, MAX_CAPACITY)
        rate = _limit("refill_per_sec", refill_per_sec, MAX_REFILL_PER_SEC)
        self._n = n
        self._level = [cap] * n  # micro-tokens
        self._cap = [cap] * n  # micro-tokens
        self._rate = [rate] * n  # micro-tokens per second
        self._frac = [0] * n  # carried refill, 10**-6 micro-token
        self._last = [_NEVER] * n  # microseconds of the last refill

    def _check(self, slot: int) -> None:
        if not 0 <= slot < self._n:
            raise IndexError(f"slot {slot!r} out of range (0..{self._n - 1})")

    def _refill(self, slot: int, t: int) -> int:
        """Refill ``slot`` to tick ``t``; returns the level."""
        last = self._last[slot]
        level = self._level[slot]
        if t <= last:
            return level
        self._last[slot] = t
        cap = self._cap[slot]
        deficit = cap - level
        if deficit <= 0:
            self._frac[slot] = 0
            return level
        rate = self._rate[slot]
        if last == _NEVER or rate == 0:
            return level
        es, en = divmod(t - last, TICKS_PER_SEC)
        add, frac = divmod(en * rate + self._frac[slot], TICKS_PER_SEC)
        if es and es > deficit // rate:
            add = deficit
        else:
            add += es * rate
        if add >= deficit:
            self._frac[slot] = 0
            self._level[slot] = cap
            return cap
        self._frac[slot] = frac
        level += add
        self._level[slot] = level
        return level

    def configure(self, slot: int, capacity: float, refill_per_sec: float) -> None:
        self._check(slot)
        cap = _limit("capacity", capacity, MAX_CAPACITY)
        rate = _limit("refill_per_sec", refill_per_sec, MAX_REFILL_PER_SEC)
        self._cap[slot] = cap
        self._rate[slot] = rate
        if self._level[slot] >= cap:
            self._level[slot] = cap
            self._frac[slot] = 0

    def try_acquire(self, slot: int, now: float, tokens: float = 1.0) -> bool:
        self._check(slot)
        need = _tokens(tokens)
        level = self._refill(slot, _ticks(now))
        if need > level:
            return False
        self._level[slot] = level - need
        return True

    def try_acquire_pair(self, other: "TokenBuckets", slot: int, now: float, tokens: float,
                         other_tokens: float) -> bool:
        self._check(slot)
        other._check(slot)
        need = _tokens(tokens)
        need2 = _tokens(other_tokens)
        t = _ticks(now)
        level = self._refill(slot, t)
        if need > level:
            return False
        level2 = other._refill(slot, t)
        if need2 > level2:
            return False
        self._level[slot] = level - need
        other._level[slot] = level2 - need2
        return True

    def release(self, slot: int, tokens: float = 1.0) -> None:
        self._check(slot)
        level = self._level[slot] + _tokens(tokens)
        cap = self._cap[slot]
        if level >= cap:
            self._level[slot] = cap
            self._frac[slot] = 0
        else:
            self._level[slot] = level

    def available(self, slot: int, now: float) -> float:
        self._check(slot)
        return self._refill(slot, _ticks(now)) / 1e6

    def wait_time(self, slot: int, now: float, tokens: float = 1.0) -> float:
        self._check(slot)
        need = _tokens(tokens)
        t = _ticks(now)
        level = self._refill(slot, t)
        if need <= level:
            return 0.0
        rate = self._rate[slot]
        if need > self._cap[slot] or rate == 0:
            return _INF
        # e = ceil(((need - level) * 10**6 - frac) / rate) us, as a whole seconds and c us
        # (1 <= c <= 10**6), without overflow: with need - level - 1 = a * rate + b (b < rate),
        # the numerator is a * rate * 10**6 + (b * 10**6 + r), 0 < r = 10**6 - frac <= 10**6.
        a, b = divmod(need - level - 1, rate)
        c = -((-(b * TICKS_PER_SEC + TICKS_PER_SEC - self._frac[slot])) // rate)
        # a `now` behind the slot's clock mark waits for the mark too (rule 3)
        return a + (c + self._last[slot] - t) / 1e6

    def reset(self, slot: int) -> None:
        self._check(slot)
        self._level[slot] = self._cap[slot]
        self._frac[slot] = 0
        self._last[slot] = _NEVER

    def __len__(self) -> int:
        return self._n
