"""Selector for the token-bucket table: native (smg._native.token_bucket) or pure Python
(token_bucket_py).

Exports ``TokenBuckets`` (the one to use), ``TokenBucketsPy`` (always available) and
``TokenBucketsC`` (None when the extension is not built or SMG_NO_EXTENSIONS is set),
and the fixed-point constants (``TOKEN_SCALE``, ``TICKS_PER_SEC``, ``MAX_CAPACITY``,
``MAX_REFILL_PER_SEC``, ``MAX_NOW``). With SMG_REQUIRE_EXTENSIONS=1 a missing extension
is an ImportError, not a silent fallback (see smg._native.load). Rules (fixed point,
refill carry, injected clock, limits): token_bucket_py's docstring.
"""

from __future__ import annotations

from smg._native import load
from smg.admission.token_bucket_py import MAX_CAPACITY, MAX_NOW, MAX_REFILL_PER_SEC, TICKS_PER_SEC, TOKEN_SCALE
from smg.admission.token_bucket_py import TokenBuckets as TokenBucketsPy

_m = load("token_bucket")
TokenBucketsC = _m.TokenBuckets if _m else None
TokenBuckets = TokenBucketsC or TokenBucketsPy

__all__ = [
    "MAX_CAPACITY",
    "MAX_NOW",
    "MAX_REFILL_PER_SEC",
    "TICKS_PER_SEC",
    "TOKEN_SCALE",
    "TokenBuckets",
    "TokenBucketsC",
    "TokenBucketsPy",
]
