# cython: language_level=3
"""Native token-bucket table for admission control (TokenBuckets).

The rules are stated once, in the module docstring of the pure-Python twin
``smg/admission/token_bucket_py.py``; this module does the same integer steps, and
tests/native/test_token_bucket.py holds the two to the same results bit for bit.

Fixed point, in short: levels are int64 micro-tokens (10**6 per token), the clock is
int64 microseconds; a float argument x becomes rint(x * 1e6) (one IEEE multiply, round
half to even, as Python's round). Limits, so every intermediate fits int64:
MAX_CAPACITY = 1e12 tokens, MAX_REFILL_PER_SEC = 9e6 tokens/s, |now| <= MAX_NOW = 1e12 s;
resolution 1e-6 token and 1 us.

How it is cheap: the slots are one C array of 40-byte structs allocated at construction
(token_bucket.pxd), a decision is a bounds check, two float-to-int conversions and a few
integer operations on one struct, with no Python object created except the result.

Not thread-safe: driven from the event loop thread, relying on the GIL (no nogil).
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.math cimport INFINITY, rint
from libc.stdint cimport INT64_MIN, int64_t

# The public API, as in token_bucket.pyi and the twin (tests/test_stubs.py checks all three).
__all__ = ["MAX_CAPACITY", "MAX_NOW", "MAX_REFILL_PER_SEC", "TICKS_PER_SEC", "TOKEN_SCALE", "TokenBuckets"]

TOKEN_SCALE = TB_SCALE
TICKS_PER_SEC = TB_TICKS
# Same values and reasons as token_bucket_py (rule 6).
cdef double _MAX_CAPACITY = 1e12     # tokens: 10**18 micro-tokens < 2**63
cdef double _MAX_REFILL = 9e6        # tokens/s: 999_999 us * 9e12 micro-tokens/s < 2**63
cdef double _MAX_NOW = 1e12          # seconds: clock differences stay under 2e18 us
MAX_CAPACITY = _MAX_CAPACITY
MAX_REFILL_PER_SEC = _MAX_REFILL
MAX_NOW = _MAX_NOW

# A request larger than any capacity (tokens > MAX_CAPACITY): fails every acquire.
cdef int64_t _OVER = 1000000000000000001
# `last` of a slot that has not refilled since construction or reset().
cdef int64_t _NEVER = INT64_MIN


cdef inline int64_t _limit(str name, double value, double high) except -1:
    # A capacity or rate in micro-units; refuses negative, NaN and above `high`.
    if not (0.0 <= value <= high):
        raise ValueError(f"{name} must be between 0 and {high:g}, got {value!r}")
    return <int64_t>rint(value * 1e6)


cdef inline int64_t _tokens(double tokens) except -1:
    # A request in micro-tokens; anything above MAX_CAPACITY becomes _OVER (the range
    # check comes first: converting an out-of-range double to int64 is undefined in C).
    if not (tokens >= 0.0):
        raise ValueError(f"tokens must be >= 0, got {tokens!r}")
    if tokens > _MAX_CAPACITY:
        return _OVER
    return <int64_t>rint(tokens * 1e6)


cdef inline int64_t _ticks(double now) except? -1:
    # The clock in microseconds; refuses NaN and beyond MAX_NOW (undefined conversion).
    if not (-_MAX_NOW <= now <= _MAX_NOW):
        raise ValueError(f"now must be a finite clock reading within {_MAX_NOW:g} s, got {now!r}")
    return <int64_t>rint(now * 1e6)


@cython.cdivision(True)  # every operand is >= 0 and every divisor > 0 (checked above it)
cdef inline int64_t _refill(TBSlot* s, int64_t t) noexcept:
    # Refill s to tick t and return its level (token_bucket_py.TokenBuckets._refill).
    cdef int64_t last = s.last
    cdef int64_t deficit, rate, e, es, add, q
    if t <= last:
        return s.level
    s.last = t
    deficit = s.cap - s.level
    if deficit <= 0:
        s.frac = 0
        return s.level
    rate = s.rate
    if last == _NEVER or rate == 0:
        return s.level
    e = t - last                  # 0 < e <= 2e18 (both ticks within +-1e18)
    es = e // TB_TICKS
    q = (e % TB_TICKS) * rate + s.frac     # < 1e6 * 9e12 + 1e6 < 2**63
    add = q // TB_TICKS
    if es != 0 and es > deficit // rate:
        add = deficit             # es * rate alone fills it (and could overflow)
    else:
        add += es * rate          # es * rate <= deficit <= 1e18
    if add >= deficit:
        s.frac = 0
        s.level = s.cap
    else:
        s.frac = q % TB_TICKS
        s.level += add
    return s.level


@cython.final
cdef class TokenBuckets:
    """A table of token buckets addressed by slot index (0..n-1): no allocation per decision."""

    def __cinit__(self, Py_ssize_t n, double capacity, double refill_per_sec):
        cdef int64_t cap, rate
        cdef Py_ssize_t i
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        cap = _limit("capacity", capacity, _MAX_CAPACITY)
        rate = _limit("refill_per_sec", refill_per_sec, _MAX_REFILL)
        # calloc checks n * sizeof for overflow; one byte for n == 0 keeps _b non-NULL
        self._b = <TBSlot*>PyMem_Calloc(<size_t>n if n else 1, sizeof(TBSlot))
        if self._b == NULL:
            raise MemoryError()
        self._n = n
        for i in range(n):
            self._b[i].level = cap
            self._b[i].cap = cap
            self._b[i].rate = rate
            self._b[i].last = _NEVER

    def __dealloc__(self):
        PyMem_Free(self._b)
        self._b = NULL

    cdef inline TBSlot* _at(self, Py_ssize_t slot) except NULL:
        # one unsigned compare covers slot < 0 and slot >= _n
        if <size_t>slot >= <size_t>self._n:
            raise IndexError(f"slot {slot!r} out of range (0..{self._n - 1})")
        return &self._b[slot]

    def configure(self, Py_ssize_t slot, double capacity, double refill_per_sec):
        cdef TBSlot* s = self._at(slot)
        cdef int64_t cap = _limit("capacity", capacity, _MAX_CAPACITY)
        cdef int64_t rate = _limit("refill_per_sec", refill_per_sec, _MAX_REFILL)
        s.cap = cap
        s.rate = rate
        if s.level >= cap:    # full: no carry (twin rule 2)
            s.level = cap
            s.frac = 0

    def try_acquire(self, Py_ssize_t slot, double now, double tokens=1.0):
        cdef TBSlot* s = self._at(slot)
        cdef int64_t need = _tokens(tokens)
        cdef int64_t level = _refill(s, _ticks(now))
        if need > level:
            return False
        s.level = level - need
        return True

    def try_acquire_pair(self, TokenBuckets other not None, Py_ssize_t slot, double now, double tokens,
                         double other_tokens):
        # twin: TokenBuckets.try_acquire_pair (both or neither; `other` untouched when self is short)
        cdef TBSlot* s = self._at(slot)
        cdef TBSlot* o = other._at(slot)
        cdef int64_t need = _tokens(tokens)
        cdef int64_t need2 = _tokens(other_tokens)
        cdef int64_t t = _ticks(now)
        cdef int64_t level = _refill(s, t)
        cdef int64_t level2
        if need > level:
            return False
        level2 = _refill(o, t)
        if need2 > level2:
            return False
        s.level = level - need
        o.level = level2 - need2
        return True

    def release(self, Py_ssize_t slot, double tokens=1.0):
        cdef TBSlot* s = self._at(slot)
        cdef int64_t level = s.level + _tokens(tokens)   # <= 1e18 + _OVER < 2**63
        if level >= s.cap:    # full: no carry (twin rule 2)
            s.level = s.cap
            s.frac = 0
        else:
            s.level = level

    def available(self, Py_ssize_t slot, double now):
        cdef TBSlot* s = self._at(slot)
        return <double>_refill(s, _ticks(now)) / 1e6

    @cython.cdivision(True)  # operands >= 0; rate > 0 is checked first
    def wait_time(self, Py_ssize_t slot, double now, double tokens=1.0):
        cdef TBSlot* s = self._at(slot)
        cdef int64_t need = _tokens(tokens)
        cdef int64_t t = _ticks(now)
        cdef int64_t level = _refill(s, t)
        cdef int64_t rate = s.rate
        cdef int64_t a, b, c
        if need <= level:
            return 0.0
        if need > s.cap or rate == 0:
            return INFINITY
        # ceil(((need - level) * 1e6 - frac) / rate) us as a s + c us, without overflow
        # (the twin's comment)
        a = (need - level - 1) // rate
        b = (need - level - 1) % rate
        c = (b * TB_TICKS + TB_TICKS - s.frac + rate - 1) // rate   # <= 9e18 + 9e12
        # after the refill s.last >= t; the gap is <= 2e18 (a now behind the clock mark)
        return <double>a + <double>(c + (s.last - t)) / 1e6

    def reset(self, Py_ssize_t slot):
        cdef TBSlot* s = self._at(slot)
        s.level = s.cap
        s.frac = 0
        s.last = _NEVER

    def __len__(self):
        return self._n
