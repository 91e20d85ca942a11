"""Per-worker circuit breaker (sans-I/O): a transition table plus outcome counting.

Rule 1: every breaker transition lives in ``TRANSITIONS``; ``CircuitBreaker`` counts
outcomes and looks rows up with the shared guard engine (``smg.workers.guards``).
Rule 2: no clock, no I/O: the caller passes ``now`` (monotonic seconds) to every call
that may depend on time. Rule 3: thresholds come from the settings table
(``from_config``: ``cb_*`` settings, a WorkerSpec's ``resilience`` over them); the
constructor restates no default.

Theory of operation (SMG 1.9 ``core/circuit_breaker.rs`` semantics):

- closed: traffic flows. ``failure_threshold`` *consecutive* failures -> open.
- open: ``can_execute`` is False, so the gateway leaves the worker out of the
  candidate set. Once ``timeout`` seconds have passed since the circuit opened, the
  next ``can_execute(now)``/``state_at(now)`` moves it to half_open (lazily: nothing
  runs in the background). Outcomes recorded while open (late answers to requests
  sent before it opened) are counted but move nothing.
- health readmission: when the worker's health checks promote it to Ready again
  (``readmit``), an open breaker moves to half_open at once instead of waiting for its
  timeout; each such move is counted (``health_readmissions``,
  ``smg_worker_cb_health_readmissions_total``). A breaker whose timeout already passed
  goes half_open by the timeout and is not counted.
- half_open: traffic flows again (SMG does no probe limiting in half-open).
  ``success_threshold`` consecutive successes -> closed; any failure -> open.

Counter resets on entering a state: closed zeroes both streaks, open zeroes the
success streak, half_open zeroes both. ``CB_WINDOW`` (``--cb-window-duration-secs``)
is accepted for config compatibility but, as in SMG 1.9, unused by this
consecutive-count logic.

What counts as a failure: an upstream status in the worker's retryable set
(``smg.workers.retry.RETRYABLE_STATUS`` by default) or a transport error (no status);
every other status, 4xx included, is a success (``outcome_ok``).
"""
from __future__ import annotations

from collections.abc import Callable

from smg.workers.guards import ALWAYS, check_total, next_state
from smg.workers.retry import RETRYABLE_STATUS

# States (the values match SMG's labels; STATE_VALUES gives the smg_worker_cb_state gauge).
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

# Inputs.
SUCCESS = "success"
FAILURE = "failure"
TIMEOUT = "timeout"        # the open timeout elapsed (fed lazily by state_at/can_execute)
RESET = "reset"            # admin: force closed
FORCE_OPEN = "force_open"  # admin: force open
HEALTHY = "healthy"        # the worker's health checks promoted it to Ready
INPUTS = (SUCCESS, FAILURE, TIMEOUT, RESET, FORCE_OPEN, HEALTHY)

# Counters / guards.
CONSECUTIVE_FAILURES = "consecutive_failures"
CONSECUTIVE_SUCCESSES = "consecutive_successes"
FAILURE_LIMIT = "failure"
SUCCESS_LIMIT = "success"

# (state, input) -> guards ((counter, limit, next_state), ...); first guard met fires;
# () means stay.
TRANSITIONS: dict = {
    (CLOSED, SUCCESS): (),
    (CLOSED, FAILURE): ((CONSECUTIVE_FAILURES, FAILURE_LIMIT, OPEN),),
    (CLOSED, TIMEOUT): (),
    (CLOSED, RESET): (),
    (CLOSED, FORCE_OPEN): ((ALWAYS, None, OPEN),),
    (CLOSED, HEALTHY): (),
    (OPEN, SUCCESS): (),
    (OPEN, FAILURE): (),
    (OPEN, TIMEOUT): ((ALWAYS, None, HALF_OPEN),),
    (OPEN, RESET): ((ALWAYS, None, CLOSED),),
    (OPEN, FORCE_OPEN): (),
    (OPEN, HEALTHY): ((ALWAYS, None, HALF_OPEN),),
    (HALF_OPEN, SUCCESS): ((CONSECUTIVE_SUCCESSES, SUCCESS_LIMIT, CLOSED),),
    (HALF_OPEN, FAILURE): ((ALWAYS, None, OPEN),),
    (HALF_OPEN, TIMEOUT): (),
    (HALF_OPEN, RESET): ((ALWAYS, None, CLOSED),),
    (HALF_OPEN, FORCE_OPEN): ((ALWAYS, None, OPEN),),
    (HALF_OPEN, HEALTHY): (),
}
check_total(TRANSITIONS, STATES, INPUTS, "breaker")

# Which streaks entering a state zeroes.
_RESETS_ON_ENTRY = {
    CLOSED: (CONSECUTIVE_FAILURES, CONSECUTIVE_SUCCESSES),
    OPEN: (CONSECUTIVE_SUCCESSES,),
    HALF_OPEN: (CONSECUTIVE_FAILURES, CONSECUTIVE_SUCCESSES),
}

_RETRYABLE = frozenset(RETRYABLE_STATUS)


def outcome_ok(status_or_error, retryable=_RETRYABLE) -> bool:
    """Classifies one upstream outcome for the breaker.

    ``status_or_error`` is an HTTP status (int), or None / an exception for a transport
    error (connect failure, reset, timeout before the head).

    Returns:
        False (a failure) for a status in ``retryable`` or a transport error; True for
        any other status.
    """
    if isinstance(status_or_error, bool) or not isinstance(status_or_error, int):
        return False
    return status_or_error not in retryable


class CircuitBreaker:
    """One worker's breaker. Not thread-safe (one event loop owns it).

    ``on_transition(breaker, from_state, to_state)`` is called after every state change
    (metrics: ``smg_worker_cb_transitions_total{worker,from,to}``, ``smg_worker_cb_state``);
    ``label`` names the worker for it.
    """

    __slots__ = ("failure_threshold", "success_threshold", "timeout", "window", "enabled", "label",
                 "on_transition", "state", "changed_at", "consecutive_failures",
                 "consecutive_successes", "total_failures", "total_successes", "last_failure_at",
                 "health_readmissions", "_limits")

    def __init__(self, failure_threshold: int, success_threshold: int, timeout: float,
                 window: float, *, enabled: bool = True, label: str = "",
                 on_transition: Callable[[CircuitBreaker, str, str], None] | None = None,
                 now: float = 0.0) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ValueError("circuit breaker thresholds must be at least 1")
        if timeout < 0:
            raise ValueError("circuit breaker timeout must not be negative")
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.timeout = timeout
        self.window = window
        self.enabled = enabled
        self.label = label
        self.on_transition = on_transition
        self.state = CLOSED
        self.changed_at = now
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.total_failures = 0
        self.total_successes = 0
        self.last_failure_at: float | None = None
        self.health_readmissions = 0
        self._limits = {FAILURE_LIMIT: failure_threshold, SUCCESS_LIMIT: success_threshold}

    @classmethod
    def from_config(cls, config, resilience: dict | None = None, *, label: str = "",
                    on_transition: Callable[[CircuitBreaker, str, str], None] | None = None,
                    now: float = 0.0) -> CircuitBreaker:
        """A breaker from the ``cb_*`` settings, with the ``cb_*`` fields of a WorkerSpec's
        ``resilience`` section (when given) over them."""
        res = resilience or {}
        return cls(res.get("cb_failure_threshold", config.cb_failure_threshold),
                   res.get("cb_success_threshold", config.cb_success_threshold),
                   res.get("cb_timeout_secs", config.cb_timeout_duration_secs),
                   res.get("cb_window_secs", config.cb_window_duration_secs),
                   enabled=not (config.disable_circuit_breaker or res.get("disable_circuit_breaker", False)),
                   label=label, on_transition=on_transition, now=now)

    def retune(self, other: CircuitBreaker) -> None:
        """Takes ``other``'s thresholds, timeout and window (a configuration reload);
        the state, its counters and ``enabled`` are kept."""
        self.failure_threshold, self.success_threshold = other.failure_threshold, other.success_threshold
        self.timeout, self.window = other.timeout, other.window
        self._limits = dict(other._limits)

    def state_at(self, now: float) -> str:
        """The state, after applying the lazy open -> half_open timeout check."""
        if self.state == OPEN and now - self.changed_at >= self.timeout:
            self._apply(TIMEOUT, now)
        return self.state

    def can_execute(self, now: float) -> bool:
        """True if the worker may receive traffic (closed or half_open)."""
        if not self.enabled:
            return True
        return self.state_at(now) != OPEN

    def record(self, ok: bool, now: float) -> str | None:
        """Counts one request outcome.

        Returns:
            The new state if this outcome changed it, else None.
        """
        if ok:
            self.total_successes += 1
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.total_failures += 1
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_failure_at = now
        if not self.enabled:
            return None
        return self._apply(SUCCESS if ok else FAILURE, now)

    def record_status(self, status_or_error, now: float, retryable=_RETRYABLE) -> str | None:
        """``record(outcome_ok(status_or_error, retryable), now)``."""
        return self.record(outcome_ok(status_or_error, retryable), now)

    def reset(self, now: float) -> str | None:
        """Admin: force closed."""
        return self._apply(RESET, now)

    def force_open(self, now: float) -> str | None:
        """Admin: force open (the timeout starts now)."""
        return self._apply(FORCE_OPEN, now)

    def readmit(self, now: float) -> str | None:
        """The worker's health checks promoted it to Ready: an open breaker (its timeout
        not yet passed) goes half_open now, counted in ``health_readmissions``.

        Returns:
            The new state if the breaker moved, else None.
        """
        if not self.enabled or self.state_at(now) != OPEN:
            return None
        self.health_readmissions += 1
        return self._apply(HEALTHY, now)

    def _apply(self, event: str, now: float) -> str | None:
        target = next_state(TRANSITIONS, self.state, event, self, self._limits, "breaker")
        if target is None:
            return None
        old = self.state
        self.state = target
        self.changed_at = now
        for c in _RESETS_ON_ENTRY[target]:
            setattr(self, c, 0)
        if self.on_transition is not None:
            self.on_transition(self, old, target)
        return target

    def stats(self, now: float) -> dict:
        return {"state": self.state_at(now), "consecutive_failures": self.consecutive_failures,
                "consecutive_successes": self.consecutive_successes,
                "total_failures": self.total_failures, "total_successes": self.total_successes,
                "time_since_last_failure": None if self.last_failure_at is None else now - self.last_failure_at,
                "time_since_last_state_change": now - self.changed_at}

    def __repr__(self) -> str:
        return (f"CircuitBreaker({self.label or '?'}, {self.state}, failures={self.consecutive_failures}, "
                f"successes={self.consecutive_successes})")
