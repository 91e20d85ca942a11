# cython: language_level=3
#
# smg._native.token_bucket: declarations of the native token-bucket table (this file is
# the contract).
#
# Twin: smg/admission/token_bucket_py.py, whose module docstring states the rules (fixed
# point, exact refill carry, injected clock, limits); token_bucket.pyx does the same
# integer steps. Stub: smg/_native/token_bucket.pyi. Only smg/admission/token_bucket.py
# (the selector) imports this module.
#
# Units: micro-tokens (TB_SCALE per token) and microseconds (TB_TICKS per second), all
# int64. The limits (MAX_CAPACITY 1e12 tokens, MAX_REFILL_PER_SEC 9e6 tokens/s, |now| <=
# 1e12 s) keep every intermediate below 2**63: the largest is the sub-second refill term
# 999_999 us * rate + frac < 9e18 + 1e6.
#
# Memory: one PyMem block of n TBSlot structs (40 bytes each), allocated at construction,
# freed in __dealloc__; no call allocates afterwards.
#
# Error returns: TokenBuckets._at signals a bad slot (IndexError) through `except NULL`;
# the argument converters signal ValueError through `except? -1`; the refill is noexcept.

from libc.stdint cimport int64_t

cdef enum:
    TB_SCALE = 1000000       # micro-tokens per token (token_bucket_py.TOKEN_SCALE)
    TB_TICKS = 1000000       # clock ticks (microseconds) per second (TICKS_PER_SEC)

# One bucket. 0 <= level <= cap always; 0 <= frac < TB_TICKS, and frac == 0 when level == cap.
cdef struct TBSlot:
    int64_t level    # micro-tokens in the bucket now
    int64_t cap      # capacity, micro-tokens
    int64_t rate     # refill, micro-tokens per second (0: no refill)
    int64_t frac     # refill carried below one micro-token, in 1e-6 micro-token
    int64_t last     # tick (us) of the last refill; INT64_MIN before the first


cdef class TokenBuckets:
    cdef:
        TBSlot* _b           # owned (PyMem): _n slots
        Py_ssize_t _n        # number of slots

    # The slot at index `slot`, or IndexError (returns NULL). inline: final, the class is
    # @cython.final.
    cdef inline TBSlot* _at(self, Py_ssize_t slot) except NULL
