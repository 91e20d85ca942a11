"""Circuit breaker: table, rules, lazy timeout, callbacks, outcome classification."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config.schema import GatewayConfig
from smg.errors import UpstreamError
from smg.workers import breaker as B
from smg.workers import guards
from smg.workers.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, outcome_ok
from smg.workers.retry import RETRYABLE_STATUS

CFG = GatewayConfig()


def make(failure_threshold=CFG.cb_failure_threshold, success_threshold=CFG.cb_success_threshold,
         timeout=CFG.cb_timeout_duration_secs, **kw) -> CircuitBreaker:
    """A breaker with the settings table's values except those given."""
    return CircuitBreaker(failure_threshold, success_threshold, timeout, CFG.cb_window_duration_secs, **kw)


def test_table_is_total():
    assert set(B.TRANSITIONS) == {(s, i) for s in B.STATES for i in B.INPUTS}
    for guards in B.TRANSITIONS.values():
        for counter, limit, target in guards:
            assert target in B.STATES


def test_state_values_for_gauge():
    assert B.STATE_VALUES == {"closed": 0, "open": 1, "half_open": 2}


def test_opens_after_consecutive_failures():
    cb = make(failure_threshold=3, success_threshold=2, timeout=30)
    assert cb.record(False, 0) is None
    assert cb.record(False, 0) is None
    assert cb.record(True, 0) is None        # resets the streak
    assert cb.record(False, 1) is None
    assert cb.record(False, 1) is None
    assert cb.record(False, 1) == OPEN
    assert cb.can_execute(1) is False
    assert cb.consecutive_failures == 3


def test_lazy_half_open_and_close():
    cb = make(failure_threshold=1, success_threshold=2, timeout=30)
    cb.record(False, 100)
    assert cb.state == OPEN
    assert cb.can_execute(129.9) is False
    assert cb.state == OPEN                   # nothing changes without a read
    assert cb.can_execute(130.0) is True
    assert cb.state == HALF_OPEN
    assert (cb.consecutive_failures, cb.consecutive_successes) == (0, 0)
    assert cb.record(True, 131) is None
    assert cb.record(True, 132) == CLOSED
    assert (cb.consecutive_failures, cb.consecutive_successes) == (0, 0)


def test_half_open_failure_reopens_and_restarts_timeout():
    cb = make(failure_threshold=1, success_threshold=3, timeout=10)
    cb.record(False, 0)
    assert cb.state_at(10) == HALF_OPEN
    cb.record(True, 11)
    assert cb.record(False, 12) == OPEN
    assert cb.can_execute(21) is False        # timeout counts from the reopen
    assert cb.can_execute(22) is True


def test_outcomes_while_open_move_nothing():
    cb = make(failure_threshold=1, success_threshold=1, timeout=10)
    cb.record(False, 0)
    for _ in range(5):
        assert cb.record(True, 1) is None
    assert cb.state == OPEN
    assert cb.total_successes == 5


def test_transition_callback():
    seen = []
    cb = make(failure_threshold=2, success_threshold=1, timeout=5, label="w1",
                        on_transition=lambda b, f, t: seen.append((b.label, f, t)))
    cb.record(False, 0)
    cb.record(False, 0)
    cb.can_execute(5)
    cb.record(True, 6)
    assert seen == [("w1", CLOSED, OPEN), ("w1", OPEN, HALF_OPEN), ("w1", HALF_OPEN, CLOSED)]


def test_disabled_breaker_always_executes():
    cb = make(failure_threshold=1, enabled=False)
    for _ in range(10):
        assert cb.record(False, 0) is None
    assert cb.can_execute(0) is True
    assert cb.state == CLOSED
    assert cb.total_failures == 10


def test_reset_and_force_open():
    cb = make(failure_threshold=5, timeout=10)
    assert cb.force_open(3) == OPEN
    assert cb.can_execute(12) is False
    assert cb.reset(4) == CLOSED
    assert cb.reset(4) is None
    assert cb.can_execute(4)


def test_stats():
    cb = make(failure_threshold=5)
    cb.record(False, 10)
    s = cb.stats(12)
    assert s["state"] == CLOSED and s["total_failures"] == 1 and s["time_since_last_failure"] == 2


def test_validation():
    with pytest.raises(ValueError):
        make(failure_threshold=0)
    with pytest.raises(ValueError):
        make(success_threshold=0)
    with pytest.raises(ValueError):
        make(timeout=-1)


@pytest.mark.parametrize("status,ok", [
    (200, True), (201, True), (400, True), (401, True), (404, True), (422, True),
    (408, False), (429, False), (500, False), (502, False), (503, False), (504, False),
    (501, True), (None, False),
])
def test_outcome_ok(status, ok):
    assert outcome_ok(status) is ok


def test_outcome_transport_error_and_custom_set():
    assert outcome_ok(UpstreamError("reset")) is False
    assert outcome_ok(OSError()) is False
    assert outcome_ok(True) is False  # a bool is not a status
    assert outcome_ok(500, retryable={503}) is True
    assert outcome_ok(503, retryable={503}) is False


def test_retryable_status_is_the_retry_policys():
    assert B.RETRYABLE_STATUS is RETRYABLE_STATUS
    assert {s for s in range(100, 600) if not outcome_ok(s)} == set(RETRYABLE_STATUS)


def test_thresholds_are_required():
    with pytest.raises(TypeError):
        CircuitBreaker()  # no value is restated here: they come from the settings table


def test_from_config_and_resilience_overrides():
    cfg = CFG.replace(cb_failure_threshold=4, cb_success_threshold=2, cb_timeout_duration_secs=7.0)
    cb = CircuitBreaker.from_config(cfg, label="w9", now=5.0)
    assert (cb.failure_threshold, cb.success_threshold, cb.timeout, cb.window) == \
        (4, 2, 7.0, CFG.cb_window_duration_secs)
    assert cb.enabled and cb.label == "w9" and cb.changed_at == 5.0
    cb = CircuitBreaker.from_config(cfg, {"cb_failure_threshold": 1, "cb_timeout_secs": 3.0, "max_retries": 9})
    assert (cb.failure_threshold, cb.success_threshold, cb.timeout) == (1, 2, 3.0)
    assert cb.record(False, 0) == OPEN
    assert not CircuitBreaker.from_config(cfg, {"disable_circuit_breaker": True}).enabled
    assert not CircuitBreaker.from_config(cfg.replace(disable_circuit_breaker=True)).enabled


def test_unknown_input_is_a_bug():
    cb = make()
    with pytest.raises(ValueError, match="no breaker transition"):
        cb._apply("bogus", 0)


def test_record_status():
    cb = make(failure_threshold=2)
    cb.record_status(404, 0)
    cb.record_status(503, 0)
    assert cb.record_status(None, 0) == OPEN


# -- hypothesis: any sequence, checked against an independent model

class Model:
    def __init__(self, f: int, s: int, timeout: float) -> None:
        self.f, self.s, self.timeout = f, s, timeout
        self.state, self.changed, self.cf, self.cs = CLOSED, 0.0, 0, 0

    def read(self, now: float) -> str:
        if self.state == OPEN and now - self.changed >= self.timeout:
            self.state, self.changed, self.cf, self.cs = HALF_OPEN, now, 0, 0
        return self.state

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.cs, self.cf = self.cs + 1, 0
        else:
            self.cf, self.cs = self.cf + 1, 0
        if self.state == CLOSED and not ok and self.cf >= self.f:
            self.state, self.changed, self.cs = OPEN, now, 0
        elif self.state == HALF_OPEN:
            if ok and self.cs >= self.s:
                self.state, self.changed, self.cf, self.cs = CLOSED, now, 0, 0
            elif not ok:
                self.state, self.changed, self.cs = OPEN, now, 0


EDGES = {(s, g[2]) for (s, _), gs in B.TRANSITIONS.items() for g in gs}
assert EDGES == guards.edges(B.TRANSITIONS)

step = st.tuples(st.sampled_from(["ok", "fail", "read"]), st.floats(0, 20, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(f=st.integers(1, 5), s=st.integers(1, 5), timeout=st.floats(0, 30, allow_nan=False),
       steps=st.lists(step, max_size=150))
def test_any_sequence_matches_model(f, s, timeout, steps):
    seen = []
    cb = make(f, s, timeout, on_transition=lambda b, a, c: seen.append((a, c)))
    m = Model(f, s, timeout)
    now = 0.0
    for kind, dt in steps:
        now += dt
        if kind == "read":
            assert cb.can_execute(now) == (m.read(now) != OPEN)
        else:
            cb.record(kind == "ok", now)
            m.record(kind == "ok", now)
        assert cb.state in B.STATES
        assert (cb.state, cb.consecutive_failures, cb.consecutive_successes) == (m.state, m.cf, m.cs)
    for edge in seen:
        assert edge in EDGES
    # the callback saw a connected path of states
    state = CLOSED
    for a, c in seen:
        assert a == state
        state = c
    assert state == cb.state
