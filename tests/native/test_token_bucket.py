"""Conformance tests for the token-bucket table: native (smg._native.token_bucket) vs the
pure-Python twin (smg.admission.token_bucket_py) vs an exact model.

The hand-worked cases run on both twins (``impl``). The model keeps each level as an
exact rational number of micro-tokens (``fractions.Fraction``): refill adds
``elapsed_us * rate / 10**6`` with no rounding, the observable level is its floor, and
wait_time is the least whole microsecond that reaches the request. Hypothesis drives
random sequences of configure / acquire / release / available / wait_time / reset and
clock moves (forwards, backwards, out of range) through the twin, the model and (where
compiled) the native module, and compares every result bit for bit (``repr`` of each
float, the class of each exception). The state-machine walk checks
``0 <= level <= capacity`` after every step. In the SMG_NO_EXTENSIONS=1 leg the native
side is skipped (twin_params), and the twin still answers to the model.
"""

from __future__ import annotations

import math
import tracemalloc
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import smg._native
from smg.admission import token_bucket
from smg.admission import token_bucket_py as tbpy
from smg.admission.token_bucket import TokenBucketsC, TokenBucketsPy
from smg.testing.twins import twin_params

INF = float("inf")
NAN = float("nan")
US = 1e-6  # one clock tick, one micro-token


@pytest.fixture(params=twin_params(TokenBucketsPy, TokenBucketsC))
def impl(request):
    return request.param


# -- hand-worked cases -----------------------------------------------------------------------


def test_every_slot_starts_full(impl):
    b = impl(3, 5, 1)
    assert len(b) == 3
    assert [b.available(i, 100.0) for i in range(3)] == [5.0, 5.0, 5.0]
    assert impl(0, 1, 1).__len__() == 0


def test_refill_rate(impl):
    b = impl(1, 10, 2)  # 2 tokens per second
    assert b.try_acquire(0, 0.0, 10)
    assert not b.try_acquire(0, 0.0)
    assert b.available(0, 0.25) == 0.5
    assert b.available(0, 1.0) == 2.0
    assert b.available(0, 2.5) == 5.0
    assert b.try_acquire(0, 2.5, 5)
    assert b.available(0, 3.0) == 1.0


def test_refill_clamps_at_capacity(impl):
    b = impl(1, 10, 2)
    assert b.try_acquire(0, 0.0, 4)
    assert b.available(0, 1.0) == 8.0
    assert b.available(0, 1e6) == 10.0  # a long idle: full, not 2e6
    assert b.try_acquire(0, 1e6, 10)
    assert not b.try_acquire(0, 1e6, US)  # no carry left over from the clamp


def test_refill_carries_below_one_micro_token(impl):
    # 1/3 token/s = 333_333 micro-tokens/s: each 1 ms adds 333.333 micro-tokens, so 1,000
    # refills of 1 ms must add what one refill of 1 s adds (0.333333), not 1,000 x 333.
    b = impl(2, 1, 1 / 3)
    assert b.try_acquire(0, 0.0, 1) and b.try_acquire(1, 0.0, 1)
    for k in range(1, 1001):
        b.available(0, k / 1000)
    assert b.available(0, 1.0) == b.available(1, 1.0) == 0.333333


def test_tiny_rate_accrues_over_time(impl):
    b = impl(1, 1, 3e-6)  # 3 micro-tokens per second
    assert b.try_acquire(0, 0.0, 1)
    assert b.available(0, 0.5) == 1e-6  # 1.5 micro-tokens: the level is the floor
    assert b.available(0, 1.0) == 3e-6


def test_release_clamps_at_capacity(impl):
    b = impl(1, 3, 0)
    assert b.try_acquire(0, 0.0)
    b.release(0, 5)
    assert b.available(0, 0.0) == 3.0
    b.release(0)
    assert b.available(0, 0.0) == 3.0


def test_zero_refill_is_a_concurrency_bound(impl):
    b = impl(1, 2, 0)
    assert b.try_acquire(0, 0.0) and b.try_acquire(0, 0.0)
    assert not b.try_acquire(0, 1e9)  # time never brings a permit back
    assert b.wait_time(0, 1e9) == INF
    b.release(0)
    assert b.wait_time(0, 1e9) == 0.0
    assert b.try_acquire(0, 1e9)
    assert not b.try_acquire(0, 1e9)


def test_pair_takes_both_or_neither(impl):
    req, tok = impl(2, 2, 0), impl(2, 100, 0)
    assert req.try_acquire_pair(tok, 1, 0.0, 1, 60)
    assert (req.available(1, 0.0), tok.available(1, 0.0)) == (1.0, 40.0)
    assert not req.try_acquire_pair(tok, 1, 0.0, 1, 41)         # tokens short: no request taken
    assert (req.available(1, 0.0), tok.available(1, 0.0)) == (1.0, 40.0)
    assert req.try_acquire_pair(tok, 1, 0.0, 1, 40)
    assert not req.try_acquire_pair(tok, 1, 0.0, 1, 0)          # requests short: no token taken
    assert (req.available(1, 0.0), tok.available(1, 0.0), req.available(0, 0.0)) == (0.0, 0.0, 2.0)
    with pytest.raises(IndexError):
        req.try_acquire_pair(impl(1, 1, 0), 1, 0.0, 1, 1)      # the slot must exist in both
    with pytest.raises(ValueError):
        req.try_acquire_pair(tok, 0, 0.0, 1, NAN)
    assert req.available(0, 0.0) == 2.0                          # refused arguments take nothing


def test_fractional_tokens(impl):
    b = impl(1, 1, 0)
    assert all(b.try_acquire(0, 0.0, 0.25) for _ in range(4))
    assert not b.try_acquire(0, 0.0, 0.25)
    assert b.available(0, 0.0) == 0.0
    b.release(0, 0.5)
    assert b.available(0, 0.0) == 0.5
    assert b.try_acquire(0, 0.0, 0.3) and b.available(0, 0.0) == 0.2
    assert b.try_acquire(0, 0.0, 0.0)  # zero tokens always fit
    assert b.try_acquire(0, 0.0, 4e-7)  # below half a micro-token: rounds to nothing
    assert b.available(0, 0.0) == 0.2


def test_arguments_round_half_to_even(impl):
    # x * 1e6 is exactly k + 0.5 for these: rint() and round() both go to the even side
    b = impl(4, 2.5e-6, 0)
    assert b.available(0, 0.0) == 2e-6
    b.configure(1, 3.5e-6, 0)
    b.reset(1)
    assert b.available(1, 0.0) == 4e-6
    assert b.try_acquire(1, 0.0, 1.5e-6) and b.available(1, 0.0) == 2e-6
    assert b.try_acquire(1, 0.0, 0.5e-6) and b.available(1, 0.0) == 2e-6  # rounds to 0


def test_wait_time(impl):
    b = impl(1, 10, 2)
    assert b.wait_time(0, 0.0, 10) == 0.0
    assert b.try_acquire(0, 0.0, 10)
    assert b.wait_time(0, 0.0) == 0.5
    assert b.wait_time(0, 0.0, 3) == 1.5
    assert b.wait_time(0, 0.25) == 0.25
    assert b.wait_time(0, 0.25, 0.5) == 0.0
    assert b.wait_time(0, 0.25, 10.5) == INF  # more than the capacity
    assert b.available(0, 0.25) == 0.5  # wait_time took nothing


def test_wait_time_rounds_up_to_the_microsecond_and_is_enough(impl):
    def empty():
        b = impl(1, 1, 3)  # 1/3 s per token: 333_333.33 us
        assert b.try_acquire(0, 0.0, 1)
        return b

    w = empty().wait_time(0, 0.0)
    assert w == 0.333334
    assert empty().try_acquire(0, w)
    assert not empty().try_acquire(0, w - US)


def test_wait_time_counts_the_carry(impl):
    b = impl(1, 1, 3)
    assert b.try_acquire(0, 0.0, 1)
    assert b.available(0, 0.1) == 0.3  # 0.3 tokens and 0 carry; 0.7 more take 233_333.33 us
    assert b.wait_time(0, 0.1) == 0.233334
    c = impl(1, 1, 2.5)  # 2.5 micro-tokens per us
    assert c.try_acquire(0, 0.0, 1)
    assert c.available(0, 1e-6) == 2e-6  # 2.5 micro-tokens: 2 and a carry of 0.5
    # (10**6 - 2.5) / 2.5 = 399_999 us exactly; without the carry it would be 400_000
    assert c.wait_time(0, 1e-6) == 0.399999


def test_backwards_clock_adds_nothing(impl):
    b = impl(1, 10, 2)
    assert b.try_acquire(0, 10.0, 10)
    assert b.available(0, 5.0) == 0.0  # back in time: nothing
    assert b.available(0, 10.5) == 1.0  # counted from 10.0, not from 5.0
    assert b.available(0, 11.0) == 2.0
    assert b.available(0, 9.0) == 2.0
    assert b.available(0, 11.0) == 2.0  # the interval 9..11 is not credited twice
    assert b.available(0, 12.0) == 4.0
    assert not b.try_acquire(0, 3.0, 5)
    assert b.wait_time(0, 3.0, 5) == 9.5  # the mark (12.0) is 9 s ahead, then 0.5 s of refill
    assert b.wait_time(0, 12.0, 5) == 0.5


def test_first_refill_starts_the_clock(impl):
    # a slot that has not refilled yet has no elapsed time to credit, whatever now is
    b = impl(1, 0, 0)
    b.configure(0, 10, 1)
    assert b.available(0, -1e9) == 0.0  # configure never adds tokens
    assert b.available(0, -1e9 + 3) == 3.0


def test_configure_clamps_and_never_adds(impl):
    b = impl(2, 10, 0)
    b.configure(0, 4, 0)
    assert b.available(0, 0.0) == 4.0
    assert b.available(1, 0.0) == 10.0  # slots are independent
    b.configure(0, 8, 0)
    assert b.available(0, 0.0) == 4.0  # a larger capacity adds nothing
    b.reset(0)
    assert b.available(0, 0.0) == 8.0  # reset fills to the new capacity
    b.configure(0, 8, 4)
    assert b.try_acquire(0, 1.0, 8)
    assert b.available(0, 1.5) == 2.0  # the new rate applies


def test_reset_fills_and_restarts_the_clock(impl):
    b = impl(1, 10, 1)
    assert b.try_acquire(0, 100.0, 10)
    b.reset(0)
    assert b.available(0, 50.0) == 10.0
    assert b.try_acquire(0, 50.0, 10)  # the clock restarted at 50.0
    assert b.available(0, 52.0) == 2.0


def test_more_than_any_capacity(impl):
    b = impl(1, 10, 1)
    assert b.try_acquire(0, 0.0, 5)
    for huge in (1e12 + 1, 1e300, INF):
        assert not b.try_acquire(0, 0.0, huge)
        assert b.wait_time(0, 0.0, huge) == INF
    assert b.available(0, 0.0) == 5.0
    b.release(0, INF)
    assert b.available(0, 0.0) == 10.0


def test_limits_do_not_overflow(impl):
    b = impl(1, tbpy.MAX_CAPACITY, tbpy.MAX_REFILL_PER_SEC)
    assert b.try_acquire(0, -1e12, tbpy.MAX_CAPACITY)
    assert b.available(0, 1e12) == 1e12  # the largest step (2e18 us), to the largest capacity
    b.reset(0)
    assert b.try_acquire(0, 0.0, tbpy.MAX_CAPACITY)
    assert b.available(0, 1.0) == 9e6  # the largest rate, for one second
    assert b.available(0, 1e12) == 1e12
    assert b.try_acquire(0, 1e12, 1e12)
    # 1e18 micro-tokens at 9e12 per second: 111_111_111_112 us (rounded up)
    assert b.wait_time(0, 1e12, 1e12) == 111111 + 111112 / 1e6
    b.configure(0, tbpy.MAX_CAPACITY, 1e-6)  # one micro-token per second
    assert b.wait_time(0, 1e12, tbpy.MAX_CAPACITY) == 1e18
    assert b.wait_time(0, 1e12, 1e-6) == 1.0
    b.release(0, tbpy.MAX_CAPACITY)
    b.release(0, tbpy.MAX_CAPACITY)
    assert b.available(0, 1e12) == 1e12


@pytest.mark.parametrize("cap, rate", [(-1, 1), (NAN, 1), (1e12 * 1.01, 1), (INF, 1),
                                       (1, -1), (1, NAN), (1, 9e6 * 1.01), (1, INF)])
def test_invalid_limits(impl, cap, rate):
    with pytest.raises(ValueError):
        impl(1, cap, rate)
    b = impl(1, 5, 1)
    with pytest.raises(ValueError):
        b.configure(0, cap, rate)
    assert b.available(0, 0.0) == 5.0  # a refused configure changed nothing


def test_invalid_arguments(impl):
    with pytest.raises(ValueError):
        impl(-1, 1, 1)
    b = impl(2, 5, 1)
    for bad in (-1.0, NAN, -INF):
        with pytest.raises(ValueError):
            b.try_acquire(0, 0.0, bad)
        with pytest.raises(ValueError):
            b.release(0, bad)
        with pytest.raises(ValueError):
            b.wait_time(0, 0.0, bad)
    for bad_now in (NAN, INF, -INF, 1.0001e12, -1.0001e12):
        with pytest.raises(ValueError):
            b.try_acquire(0, bad_now)
        with pytest.raises(ValueError):
            b.available(0, bad_now)
        with pytest.raises(ValueError):
            b.wait_time(0, bad_now)
    assert b.available(0, 0.0) == 5.0


@pytest.mark.parametrize("slot", [-1, 2, 1 << 40])
def test_slot_out_of_range(impl, slot):
    b = impl(2, 5, 1)
    calls = [
        lambda: b.configure(slot, 1, 1),
        lambda: b.try_acquire(slot, 0.0),
        lambda: b.release(slot),
        lambda: b.available(slot, 0.0),
        lambda: b.wait_time(slot, 0.0),
        lambda: b.reset(slot),
    ]
    for call in calls:
        with pytest.raises(IndexError):
            call()
    with pytest.raises(IndexError):
        impl(0, 1, 1).try_acquire(0, 0.0)


def test_constants_agree():
    names = ["MAX_CAPACITY", "MAX_NOW", "MAX_REFILL_PER_SEC", "TICKS_PER_SEC", "TOKEN_SCALE"]
    assert [getattr(token_bucket, n) for n in names] == [1e12, 1e12, 9e6, 10**6, 10**6]
    if TokenBucketsC is not None:
        native = smg._native.load("token_bucket")
        assert [getattr(native, n) for n in names] == [getattr(tbpy, n) for n in names]
        assert sorted(native.__all__) == sorted(tbpy.__all__)


def test_selector_honours_require_extensions():
    if smg._native.NO_EXTENSIONS:
        assert token_bucket.TokenBucketsC is None and token_bucket.TokenBuckets is TokenBucketsPy
    elif smg._native.REQUIRE_EXTENSIONS:
        assert token_bucket.TokenBucketsC is not None
        assert token_bucket.TokenBuckets is token_bucket.TokenBucketsC
    else:
        assert token_bucket.TokenBuckets is (TokenBucketsC or TokenBucketsPy)


def test_decisions_allocate_nothing_that_stays(impl):
    """Memory after 20,000 more decisions is what it was after the first 20,000 (the
    twin's state is ints that get replaced; the native table never allocates)."""
    b = impl(64, 100, 1000)
    now = 0.0

    def decide(k0):
        nonlocal now
        for k in range(k0, k0 + 20_000):
            now += 1e-5
            slot = k & 63
            if not b.try_acquire(slot, now):
                b.release(slot)
            b.wait_time(slot, now, 2.0)

    tracemalloc.start()
    try:
        decide(0)
        before = tracemalloc.get_traced_memory()[0]
        decide(20_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024, grown


# -- the exact model -------------------------------------------------------------------------

_M = 10**6


def _units(value: float, high: float) -> int:
    if not 0.0 <= value <= high:
        raise ValueError(value)
    return round(value * 1e6)


def _need(tokens: float) -> int:
    if not tokens >= 0.0:
        raise ValueError(tokens)
    return 10**18 + 1 if tokens > 1e12 else round(tokens * 1e6)


def _tick(now: float) -> int:
    if not -1e12 <= now <= 1e12:
        raise ValueError(now)
    return round(now * 1e6)


class Model:
    """Per slot: [x (exact micro-tokens, a Fraction), cap, rate (micro-tokens/s), last tick or None]."""

    def __init__(self, n: int, capacity: float, refill_per_sec: float) -> None:
        if n < 0:
            raise ValueError(n)
        cap, rate = _units(capacity, 1e12), _units(refill_per_sec, 9e6)
        self.slots = [[Fraction(cap), cap, rate, None] for _ in range(n)]

    def _slot(self, slot: int) -> list:
        if not 0 <= slot < len(self.slots):
            raise IndexError(slot)
        return self.slots[slot]

    @staticmethod
    def _refill(s: list, t: int) -> None:
        x, cap, rate, last = s
        if last is not None and t <= last:
            return
        if last is not None:
            s[0] = min(Fraction(cap), x + Fraction((t - last) * rate, _M))
        s[3] = t

    def configure(self, slot, capacity, refill_per_sec):
        s = self._slot(slot)
        cap, rate = _units(capacity, 1e12), _units(refill_per_sec, 9e6)
        s[1], s[2] = cap, rate
        s[0] = min(s[0], Fraction(cap))

    def try_acquire(self, slot, now, tokens=1.0):
        s = self._slot(slot)
        need = _need(tokens)
        self._refill(s, _tick(now))
        if need > math.floor(s[0]):
            return False
        s[0] -= need
        return True

    def try_acquire_pair(self, other, slot, now, tokens, other_tokens):
        s, o = self._slot(slot), other._slot(slot)
        need, need2, t = _need(tokens), _need(other_tokens), _tick(now)
        self._refill(s, t)
        if need > math.floor(s[0]):
            return False
        other._refill(o, t)
        if need2 > math.floor(o[0]):
            return False
        s[0] -= need
        o[0] -= need2
        return True

    def release(self, slot, tokens=1.0):
        s = self._slot(slot)
        s[0] = min(Fraction(s[1]), s[0] + _need(tokens))

    def available(self, slot, now):
        s = self._slot(slot)
        self._refill(s, _tick(now))
        return math.floor(s[0]) / 1e6

    def wait_time(self, slot, now, tokens=1.0):
        s = self._slot(slot)
        need = _need(tokens)
        self._refill(s, _tick(now))
        x, cap, rate, last = s
        if need <= math.floor(x):
            return 0.0
        if need > cap or rate == 0:
            return INF
        e = math.ceil((need - x) * _M / rate)  # least whole microsecond that reaches need
        a = -(-e // _M) - 1  # whole seconds, leaving 1..10**6 us
        return a + (e - a * _M + last - _tick(now)) / 1e6  # plus the gap to the clock mark

    def reset(self, slot):
        s = self._slot(slot)
        s[0], s[3] = Fraction(s[1]), None

    def level(self, slot) -> int:
        return math.floor(self.slots[slot][0])

    def __len__(self):
        return len(self.slots)


def _call(obj, name, *args):
    """An observable outcome: ("ok", repr of the result) or ("raise", exception class)."""
    try:
        return ("ok", repr(getattr(obj, name)(*args)))
    except (ValueError, IndexError) as exc:
        return ("raise", type(exc).__name__)


def test_model_agrees_with_the_hand_worked_cases():
    m = Model(1, 10, 2)
    assert m.try_acquire(0, 0.0, 10) and m.available(0, 2.5) == 5.0
    assert m.wait_time(0, 2.5, 6) == 0.5
    m2 = Model(1, 1, 3)
    assert m2.try_acquire(0, 0.0, 1) and m2.wait_time(0, 0.0) == 0.333334


# -- Hypothesis: random operation sequences --------------------------------------------------

CAPACITY = st.one_of(
    st.sampled_from([0, 1, 2, 3, 0.5, 7.25, 100, 4096, 1e12]),
    st.floats(0, 1e12),
    st.floats(0, 10),
    st.sampled_from([-1.0, NAN, 1.5e12, INF]),  # refused: ValueError
)
RATE = st.one_of(
    st.sampled_from([0, 1e-6, 3e-6, 1 / 3, 1, 2.5, 1000, 4096, 9e6]),
    st.floats(0, 9e6),
    st.floats(0, 10),
    st.sampled_from([-1.0, NAN, 1e7, INF]),
)
TOKENS = st.one_of(
    st.sampled_from([0.0, 1e-6, 4e-7, 0.25, 0.5, 1.0, 2.0, 3.0, 10.0, 1e12, 2e12, INF]),
    st.floats(0, 20),
    st.floats(0, 1e12),
    st.integers(0, 10**7).map(lambda k: (2 * k + 1) / 2e6),  # mostly exact halves of a micro-token
    st.sampled_from([-1.0, NAN]),
)
STEP = st.one_of(
    st.sampled_from([0.0, 1e-6, 5e-7, 1e-3, 0.1, 0.5, 1.0, 3.0, 1e6, 1e11]),
    st.floats(-100, 1e4),
    st.floats(0, 1e-3),
)
NOW = st.one_of(st.sampled_from([0.0, -1e12, 1e12, 123456.789, NAN, 2e12, -INF]), st.floats(-1e12, 1e12))


def _ops(n_slots: int):
    slot = st.integers(-1, n_slots)
    return st.lists(
        st.one_of(
            st.tuples(st.just("configure"), slot, CAPACITY, RATE),
            st.tuples(st.just("try_acquire"), slot, TOKENS),
            st.tuples(st.just("try_acquire1"), slot),
            st.tuples(st.just("release"), slot, TOKENS),
            st.tuples(st.just("available"), slot),
            st.tuples(st.just("wait_time"), slot, TOKENS),
            st.tuples(st.just("reset"), slot),
            # the second table of each implementation, and decisions on both at once
            st.tuples(st.just("pair"), slot, TOKENS, TOKENS),
            st.tuples(st.just("pair"), slot, st.just(1.0), TOKENS),
            st.tuples(st.just("o_try_acquire"), slot, TOKENS),
            st.tuples(st.just("o_release"), slot, TOKENS),
            st.tuples(st.just("o_available"), slot),
            st.tuples(st.just("advance"), STEP),
            st.tuples(st.just("advance"), STEP),
            st.tuples(st.just("jump"), NOW),
        ),
        max_size=60,
    )


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 4))
    return n, draw(CAPACITY), draw(RATE), draw(st.floats(-1e9, 1e9)), draw(_ops(n))


def _run(objs: list, n, cap, rate, start, ops) -> None:
    made = [_call(cls, "__call__", n, cap, rate) for cls in objs]
    assert all(m[0] == made[0][0] for m in made), made
    if made[0][0] == "raise":
        assert len({m[1] for m in made}) == 1, made
        return
    tables = [cls(n, cap, rate) for cls in objs]
    others = [cls(n, cap, rate) for cls in objs]   # try_acquire_pair's second table
    now = start
    for op in ops:
        kind = op[0]
        if kind == "advance":
            now += op[1]
            continue
        if kind == "jump":
            now = op[1]
            continue
        if kind == "pair":
            got = [_call(t, "try_acquire_pair", o, op[1], now, op[2], op[3]) for t, o in zip(tables, others)]
            assert all(g == got[0] for g in got), (op, now, got)
            continue
        if kind.startswith("o_"):
            kind = kind[2:]
            args = (op[1], now) if kind == "available" else (op[1], now, op[2]) if kind == "try_acquire" \
                else (op[1], op[2])
            got = [_call(t, kind, *args) for t in others]
            assert all(g == got[0] for g in got), (op, now, got)
            continue
        if kind == "configure":
            args = (op[1], op[2], op[3])
        elif kind in ("try_acquire", "wait_time"):
            args = (op[1], now, op[2])
        elif kind == "try_acquire1":
            kind, args = "try_acquire", (op[1], now)
        elif kind == "release":
            args = (op[1], op[2])
        elif kind == "available":
            args = (op[1], now)
        else:
            args = (op[1],)
        got = [_call(t, kind, *args) for t in tables]
        assert all(g == got[0] for g in got), (kind, args, got)


DIFF_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("c_cls", twin_params(None, TokenBucketsC))
@DIFF_SETTINGS
@given(scenario=scenarios())
def test_random_sequences_agree_exactly(c_cls, scenario):
    """py leg: twin == exact model; c leg: native == twin == exact model, bit for bit."""
    objs = [Model, TokenBucketsPy] + ([c_cls] if c_cls is not None else [])
    _run(objs, *scenario)


@pytest.mark.parametrize("c_cls", twin_params(None, TokenBucketsC))
@DIFF_SETTINGS
@given(cap=st.floats(0, 1e12), rate=st.floats(0, 9e6), take=st.floats(0, 1), steps=st.lists(STEP, max_size=8),
       tokens=st.floats(0, 1e12))
def test_wait_time_is_enough_and_least(c_cls, cap, rate, take, steps, tokens):
    """At now + wait_time the tokens can be taken; one microsecond earlier they cannot."""
    cls = c_cls or TokenBucketsPy

    def prepared():
        b = cls(1, cap, rate)
        b.try_acquire(0, 0.0, cap * take)
        t = 0.0
        for dt in steps:
            t = max(0.0, t + dt)
            b.available(0, t)
        return b, t

    b, t = prepared()
    w = b.wait_time(0, t, tokens)
    if w == INF:
        assert _need(tokens) > _units(cap, 1e12) or _units(rate, 9e6) == 0
        return
    if w == 0.0:
        assert prepared()[0].try_acquire(0, t, tokens)
        return
    if t + w > 1e9:  # keep now + w exact to the microsecond
        return
    e = round(w * 1e6)
    ok, _ = prepared()
    assert ok.try_acquire(0, (round(t * 1e6) + e) / 1e6, tokens)
    short, _ = prepared()
    assert not short.try_acquire(0, (round(t * 1e6) + e - 1) / 1e6, tokens)


# -- state-machine walk: 0 <= level <= capacity ----------------------------------------------

VALID_CAP = st.one_of(st.sampled_from([0, 1, 2, 5, 0.5, 1e12]), st.floats(0, 100))
VALID_RATE = st.one_of(st.sampled_from([0, 1e-6, 1 / 3, 1, 7, 9e6]), st.floats(0, 100))
VALID_TOKENS = st.one_of(st.sampled_from([0.0, 1e-6, 0.5, 1.0, 2.0, 1e12]), st.floats(0, 50))
N_SLOTS = 3


def _machine(c_cls):
    class BucketMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model(N_SLOTS, 5, 1)
            self.tables = [TokenBucketsPy(N_SLOTS, 5, 1)] + ([c_cls(N_SLOTS, 5, 1)] if c_cls else [])
            self.now = 1000.0

        def _all(self, name, *args):
            want = _call(self.model, name, *args)
            got = [_call(t, name, *args) for t in self.tables]
            assert all(g == want for g in got), (name, args, want, got)
            return want

        @rule(slot=st.integers(0, N_SLOTS - 1), cap=VALID_CAP, rate=VALID_RATE)
        def configure(self, slot, cap, rate):
            self._all("configure", slot, cap, rate)

        @rule(slot=st.integers(0, N_SLOTS - 1), tokens=VALID_TOKENS)
        def acquire(self, slot, tokens):
            self._all("try_acquire", slot, self.now, tokens)

        @rule(slot=st.integers(0, N_SLOTS - 1), tokens=VALID_TOKENS)
        def release(self, slot, tokens):
            self._all("release", slot, tokens)

        @rule(slot=st.integers(0, N_SLOTS - 1), tokens=VALID_TOKENS)
        def wait_time(self, slot, tokens):
            kind, w = self._all("wait_time", slot, self.now, tokens)
            assert kind == "ok" and float(w) >= 0.0

        @rule(slot=st.integers(0, N_SLOTS - 1))
        def reset(self, slot):
            self._all("reset", slot)

        @rule(dt=st.one_of(st.floats(0, 5), st.sampled_from([1e-6, 1e6])))
        def advance(self, dt):
            self.now += dt

        @rule(dt=st.floats(0, 50))
        def go_back(self, dt):
            self.now -= dt

        @invariant()
        def level_within_capacity(self):
            for slot in range(N_SLOTS):
                kind, level = self._all("available", slot, self.now)
                cap = self.model.slots[slot][1] / 1e6
                assert kind == "ok" and 0.0 <= float(level) <= cap, (slot, level, cap)
                assert 0 <= self.model.level(slot) <= self.model.slots[slot][1]

    return BucketMachine


@pytest.mark.parametrize("c_cls", twin_params(None, TokenBucketsC))
def test_state_machine_walk(c_cls):
    run_state_machine_as_test(
        _machine(c_cls),
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
