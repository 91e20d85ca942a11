"""Retry policy: attempts, retryable outcomes, backoff with jitter."""
from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config.schema import GatewayConfig
from smg.errors import UpstreamError
from smg.workers.retry import EXCLUDING_STATUS, RETRYABLE_STATUS, RequestFaults, RetryPolicy, request_caused

CFG = GatewayConfig()
BASE = RetryPolicy.from_config(CFG)


def policy(**kw) -> RetryPolicy:
    """The gateway's default policy (from the settings table) with ``kw`` changed."""
    return dataclasses.replace(BASE, **kw)


def test_defaults_are_smg():
    p = BASE
    assert (p.max_retries, p.initial_backoff_ms, p.max_backoff_ms, p.multiplier, p.jitter_factor) == \
        (5, 50, 30000, 1.5, 0.2)
    assert set(p.retryable_status) == {408, 429, 500, 502, 503, 504}
    assert RETRYABLE_STATUS == (408, 429, 500, 502, 503, 504)


def test_max_retries_is_total_attempts_min_one():
    assert policy(max_retries=0).max_retries == 1
    assert policy(max_retries=-3).max_retries == 1
    p = policy(max_retries=3)
    assert [p.should_retry(a, 503) for a in range(4)] == [True, True, False, False]
    assert BASE.without_retries().should_retry(0, 503) is False


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status):
    p = BASE
    assert p.is_retryable(status)
    assert p.should_retry(0, status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 422, 501, 505])
def test_non_retryable_statuses(status):
    p = BASE
    assert not p.is_retryable(status)
    assert not p.should_retry(0, status)


def test_transport_errors_are_retried():
    p = BASE
    assert p.should_retry(0, None)
    assert p.should_retry(0, UpstreamError("reset"))
    assert p.should_retry(0, TimeoutError())
    assert not p.should_retry(4, UpstreamError("reset"))  # out of attempts


def test_custom_retryable_set():
    p = policy(retryable_status=(503,))
    assert p.should_retry(0, 503) and not p.should_retry(0, 500)


def test_base_delay_schedule():
    p = policy(initial_backoff_ms=100, max_backoff_ms=1000, multiplier=2.0)
    assert [p.base_delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert p.base_delay(10**6) == 1.0  # no overflow
    with pytest.raises(ValueError):
        p.base_delay(-1)


def test_delay_without_jitter_is_exact():
    p = policy(jitter_factor=0.0)
    assert p.delay(0) == 0.05
    assert p.delay(1) == pytest.approx(0.075)


def test_delay_jitter_uses_rng():
    p = policy(initial_backoff_ms=1000, jitter_factor=0.2)
    a = [p.delay(0, random.Random(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    ds = [p.delay(0, random.Random(i)) for i in range(200)]
    assert all(0.8 <= d <= 1.2 for d in ds)
    assert min(ds) < 0.85 and max(ds) > 1.15


def test_validation():
    for kw in ({"initial_backoff_ms": -1}, {"multiplier": 0.5}, {"jitter_factor": 1.5}):
        with pytest.raises(ValueError):
            policy(**kw)


def test_from_config():
    cfg = SimpleNamespace(retry_max_retries=3, retry_initial_backoff_ms=10, retry_max_backoff_ms=500,
                          retry_backoff_multiplier=2.0, retry_jitter_factor=0.1, disable_retries=False)
    p = RetryPolicy.from_config(cfg)
    assert (p.max_retries, p.initial_backoff_ms, p.max_backoff_ms, p.multiplier, p.jitter_factor) == \
        (3, 10, 500, 2.0, 0.1)
    cfg.disable_retries = True
    assert RetryPolicy.from_config(cfg).max_retries == 1
    assert RetryPolicy.from_config(cfg).initial_backoff_ms == 10
    with pytest.raises(AttributeError):
        RetryPolicy.from_config(SimpleNamespace())  # no fallback values: the table is the one source


def test_no_restated_defaults():
    with pytest.raises(TypeError):
        RetryPolicy()
    assert RetryPolicy(1, 2, 3, 1.0, 0.0).retryable_status == frozenset(RETRYABLE_STATUS)


def test_for_worker_without_retry_fields_is_none():
    assert BASE.for_worker(None) is None
    assert BASE.for_worker({}) is None
    assert BASE.for_worker({"cb_failure_threshold": 2, "disable_circuit_breaker": True}) is None


def test_for_worker_overrides_over_the_gateways_policy():
    gw = RetryPolicy.from_config(CFG.replace(retry_max_retries=4, retry_initial_backoff_ms=20,
                                             retry_jitter_factor=0.0))
    p = gw.for_worker({"max_retries": 2, "backoff_multiplier": 3.0, "retryable_status_codes": [503, 599],
                       "cb_failure_threshold": 1})
    assert (p.max_retries, p.initial_backoff_ms, p.max_backoff_ms, p.multiplier, p.jitter_factor) == \
        (2, 20, gw.max_backoff_ms, 3.0, 0.0)
    assert p.retryable_status == frozenset({503, 599})
    assert p.should_retry(0, 599) and not p.should_retry(0, 500) and not p.should_retry(1, 503)
    assert p.base_delay(1) == pytest.approx(0.06)
    p = gw.for_worker({"initial_backoff_ms": 5, "max_backoff_ms": 7, "jitter_factor": 0.5})
    assert (p.max_retries, p.initial_backoff_ms, p.max_backoff_ms, p.jitter_factor) == (4, 5, 7, 0.5)
    assert gw.max_retries == 4  # the gateway's policy is untouched


def test_for_worker_disable_retry():
    p = BASE.for_worker({"disable_retry": True, "max_retries": 9})
    assert p.max_retries == 1 and not p.should_retry(0, 503)
    assert BASE.for_worker({"disable_retry": False}) == BASE  # explicit: the gateway's values
    with pytest.raises(ValueError):
        BASE.for_worker({"backoff_multiplier": 0.5})


@settings(max_examples=300, deadline=None)
@given(initial=st.floats(0, 5000), cap=st.floats(0, 60000), mult=st.floats(1.0, 4.0),
       jitter=st.floats(0, 1), attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_delay_bounds(initial, cap, mult, jitter, attempt, seed):
    p = policy(initial_backoff_ms=initial, max_backoff_ms=cap, multiplier=mult, jitter_factor=jitter)
    base = p.base_delay(attempt)
    assert 0 <= base <= cap / 1000.0 + 1e-12
    assert base <= max(initial, 0) / 1000.0 * mult ** attempt + 1e-9 or base == cap / 1000.0
    if attempt:
        assert p.base_delay(attempt - 1) <= base + 1e-12  # never shrinks
    d = p.delay(attempt, random.Random(seed))
    assert max(0.0, base * (1 - jitter)) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


@settings(max_examples=200, deadline=None)
@given(n=st.integers(-5, 20), outcomes=st.lists(st.one_of(st.integers(100, 599), st.none()), max_size=30))
def test_attempts_never_exceed_max(n, outcomes):
    p = policy(max_retries=n)
    attempts = 0
    for i, o in enumerate(outcomes):
        attempts += 1
        if not p.should_retry(i, o):
            break
    assert 1 <= attempts or not outcomes
    assert attempts <= p.max_retries


# -- request-caused answers (smg.workers.retry.request_caused, RequestFaults) ------------

@pytest.mark.parametrize("body", [
    b'{"object":"error","message":"Input validation error: `max_tokens` must be at least 1","code":400}',
    b'{"error":{"message":"This model\'s maximum context length is 4096 tokens"}}',
    b'{"detail":[{"loc":["body","messages"],"msg":"field required"}]}',
    b'{"error":{"type":"invalid_request_error","message":"x"}}',
    b"ValueError: temperature must be between 0 and 2",
])
def test_validation_messages_in_a_5xx_are_request_caused(body):
    assert request_caused(500, body) and request_caused(503, body)
    assert not request_caused(429, body)  # only 5xx are looked at


@pytest.mark.parametrize("body", [b'{"error":{"message":"boom"}}', b"CUDA error: invalid device ordinal",
                                  b"Internal Server Error", b"", b"out of memory"])
def test_worker_failures_are_not(body):
    assert not request_caused(500, body)


def test_an_identical_answer_is_the_request_s_until_another_request_shares_it():
    f = RequestFaults(window=10.0, max_entries=4)
    d = RequestFaults.digest(500, b"boom")
    assert f.identical_is_request_caused(d, b"r1", 0.0)
    assert f.identical_is_request_caused(d, b"r1", 1.0)          # the same request again
    assert not f.identical_is_request_caused(d, b"r2", 2.0)      # shared: the workers' failure
    assert not f.identical_is_request_caused(d, b"r1", 3.0)      # ... for everyone from now on
    assert f.identical_is_request_caused(d, b"r3", 20.0)         # the window passed
    for i in range(10):
        f.identical_is_request_caused(RequestFaults.digest(500, b"%d" % i), b"r%d" % i, 30.0 + i)
    assert len(f.seen) <= 4
    assert EXCLUDING_STATUS == 500
