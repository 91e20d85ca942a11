"""Micro-benchmarks of the token-bucket table, native (c) vs pure-Python twin (py).

Each round is ``CALLS`` decisions in a plain Python loop over (slot, now) pairs
prepared beforehand (1,024 slots, the clock advancing 1 us per call), so the figure per
decision is the round's median / CALLS; it includes the loop and the Python call
itself, which is what a caller pays. ``extra_info["ns_per_call"]`` records it.

- ``try_acquire`` granted: a bucket that never runs dry (refill keeps up).
- ``try_acquire`` refused: an empty bucket with no refill.
- a permit cycle: ``try_acquire`` then ``release`` (the concurrency limiter's pair).
- the loop alone (no call): subtract it to get the cost of the call and the decision.

Run: ``python -m pytest bench/micro/test_token_bucket_bench.py --benchmark-only``.
Timing never decides pass/fail here; the asserts only check that the work was done.
"""
from __future__ import annotations

import pytest

from smg.admission.token_bucket import TokenBucketsC, TokenBucketsPy
from smg.testing.twins import twin_params

CALLS = 1000
SLOTS = 1024
PAIRS = [(k % SLOTS, 1000.0 + k * 1e-6) for k in range(CALLS)]


@pytest.fixture(params=twin_params(TokenBucketsPy, TokenBucketsC))
def impl(request):
    return request.param


def _per_call(benchmark) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["ns_per_call"] = round(stats.stats.median / CALLS * 1e9, 1)


def test_try_acquire_granted(benchmark, impl):
    b = impl(SLOTS, 1e9, 1e6)
    acquire = b.try_acquire

    def run():
        ok = 0
        for slot, now in PAIRS:
            ok += acquire(slot, now)
        return ok

    assert benchmark(run) == CALLS
    _per_call(benchmark)


def test_try_acquire_refused(benchmark, impl):
    b = impl(SLOTS, 0, 0)
    acquire = b.try_acquire

    def run():
        ok = 0
        for slot, now in PAIRS:
            ok += acquire(slot, now)
        return ok

    assert benchmark(run) == 0
    _per_call(benchmark)


def test_permit_cycle(benchmark, impl):
    b = impl(SLOTS, 4, 0)
    acquire, release = b.try_acquire, b.release

    def run():
        ok = 0
        for slot, now in PAIRS:
            ok += acquire(slot, now)
            release(slot)
        return ok

    assert benchmark(run) == CALLS
    assert b.available(0, 2000.0) == 4.0
    _per_call(benchmark)


def test_loop_alone(benchmark):
    def run():
        ok = 0
        for slot, now in PAIRS:
            ok += 1
        return ok

    assert benchmark(run) == CALLS
    _per_call(benchmark)
