"""The holders behind smg_admission_inflight, smg_worker_routing_keys_active and
smg_worker_cb_health_readmissions_total: the limiter's holding count, the routing keys
held per worker, and the breaker's health readmission."""
import pytest

from smg.admission.limiter import ConcurrencyLimiter
from smg.observability.routing_keys import RoutingKeysHeld
from smg.server.context import RequestContext
from smg.workers.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from smg.workers.health import HealthChecker
from smg.workers.worker import FAILED, NOT_READY, READY, Worker


# -- the limiter's holders ----------------------------------------------------------------

@pytest.mark.parametrize("refill", [0.0, 5.0])
def test_limiter_holding_counts_tokens_taken_and_not_returned(refill):
    lim = ConcurrencyLimiter(3, refill, 2, 10.0)
    assert lim.holding(0.0) == 0
    assert lim.try_acquire(0.0) and lim.try_acquire(0.0)
    assert lim.holding(0.0) == 2
    lim.release(0.0)
    assert lim.holding(0.0) == 1
    assert lim.try_acquire(0.0) and lim.try_acquire(0.0)
    assert lim.holding(0.0) == 3
    assert not lim.try_acquire(0.0)          # bucket empty: nothing more held
    t = lim.enqueue("x", 0.0)
    assert lim.holding(0.0) == 3             # a queued ticket holds no token
    assert lim.release(0.0) == [t]           # the head takes the token given back
    assert lim.holding(0.0) == 3
    for _ in range(3):
        lim.release(1.0)
    assert lim.holding(1.0) == 0


def test_limiter_holding_with_refill_is_not_fooled_by_refilled_tokens():
    lim = ConcurrencyLimiter(2, 10.0, 0, 1.0)
    assert lim.try_acquire(0.0) and lim.try_acquire(0.0)
    # a second later the bucket has refilled, yet both requests still hold their tokens
    assert lim.available(1.0) == pytest.approx(2)
    assert lim.holding(1.0) == 2
    assert lim.try_acquire(1.0)
    assert lim.holding(1.0) == 3


# -- routing keys held per worker ---------------------------------------------------------

class _W:
    def __init__(self, url):
        self.url = url


class _Registry:
    def __init__(self, *workers):
        self.workers = list(workers)

    def all(self):
        return list(self.workers)


class _Owner:
    def __init__(self, ctx):
        self.ctx = ctx


def _ctx(key=None):
    ctx = RequestContext.__new__(RequestContext)
    ctx.headers = [(b"content-type", b"application/json")] + ([(b"x-smg-routing-key", key)] if key else [])
    ctx.on_end = None
    return ctx


def _end(ctx):
    for h in ctx.end_hooks():
        h(ctx)


def test_routing_keys_distinct_per_worker_released_at_request_end():
    held = RoutingKeysHeld()
    a, b = _W("http://a"), _W("http://b")
    reg = _Registry(a, b)
    sent = []
    open_leg = held.wrap(lambda w, owner: sent.append(w.url) or "leg")
    assert held.gauge(reg) == []                       # no keyed request yet: no series
    c1, c2, c3, c4 = _ctx(b"k1"), _ctx(b"k2"), _ctx(b"k1"), _ctx()
    for c, w in ((c1, a), (c2, a), (c3, a), (c4, b)):
        assert open_leg(w, _Owner(c)) == "leg"
    assert sent == ["http://a"] * 3 + ["http://b"]
    assert held.gauge(reg) == [(("http://a",), 2)]     # k1 twice counts once; keyless: nothing
    assert c4.on_end is None                          # a keyless request allocates no hook
    _end(c1)
    assert held.gauge(reg) == [(("http://a",), 2)]     # k1 still held by c3
    _end(c3)
    _end(c2)
    _end(c2)                                          # a hook runs once in effect
    assert held.gauge(reg) == [(("http://a",), 0)]     # the series stays, at zero


def test_routing_key_moves_with_a_retry_and_owners_without_ctx_hold_nothing():
    held = RoutingKeysHeld()
    a, b = _W("http://a"), _W("http://b")
    reg = _Registry(a, b)
    open_leg = held.wrap(lambda w, owner: None)
    c = _ctx(b"s")
    open_leg(a, _Owner(c))
    open_leg(a, _Owner(c))                            # retry on the same worker
    assert held.gauge(reg) == [(("http://a",), 1)]
    open_leg(b, _Owner(c))                            # retry elsewhere: the key moves
    assert sorted(held.gauge(reg)) == [(("http://a",), 0), (("http://b",), 1)]
    assert len(c.end_hooks()) == 1
    open_leg(a, object())                             # a fan-out owner: no request context
    _end(c)
    assert sorted(held.gauge(reg)) == [(("http://a",), 0), (("http://b",), 0)]
    reg.workers.remove(a)                             # a removed worker's idle series goes
    assert held.gauge(reg) == [(("http://b",), 0)]


# -- breaker readmission by health --------------------------------------------------------

def _breaker(**kw):
    return CircuitBreaker(1, 2, 30.0, 60.0, **kw)


def test_readmit_moves_an_open_breaker_to_half_open_and_counts():
    moves = []
    b = _breaker(on_transition=lambda br, old, new: moves.append((old, new)))
    b.record(False, 0.0)
    assert b.state == OPEN
    assert b.readmit(5.0) == HALF_OPEN
    assert b.health_readmissions == 1
    assert moves == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert b.can_execute(5.0)
    assert b.readmit(6.0) is None                     # half-open: nothing to readmit
    b.record(True, 7.0)
    b.record(True, 8.0)
    assert b.state == CLOSED
    assert b.readmit(9.0) is None
    assert b.health_readmissions == 1


def test_readmit_after_the_timeout_is_the_timeout_s_and_disabled_breakers_never_move():
    b = _breaker()
    b.record(False, 0.0)
    assert b.readmit(31.0) is None                    # the timeout already made it half-open
    assert b.state == HALF_OPEN and b.health_readmissions == 0
    off = _breaker(enabled=False)
    off.force_open(0.0)
    assert off.readmit(1.0) is None and off.health_readmissions == 0


def _checker(statuses):
    now = [0.0]
    return HealthChecker(lambda w, s: statuses.append(s), endpoint="/health", interval=1.0, timeout=1.0,
                         success_threshold=1, failure_threshold=1, startup_interval=None,
                         remove_unhealthy=False, clock=lambda: now[0]), now


@pytest.mark.parametrize("down", [NOT_READY, FAILED])
def test_health_promotion_to_ready_readmits_the_open_breaker(down):
    statuses = []
    hc, now = _checker(statuses)
    w = Worker("http://127.0.0.1:1", ("m",), worker_id="w")
    w.breaker = _breaker()
    hc.add(w, initial=READY)
    w.breaker.record(False, 0.0)
    assert hc.apply(w, False) == NOT_READY
    if down == FAILED:
        hc.apply(w, False)
        assert hc.apply(w, False) == FAILED
    assert w.breaker.state == OPEN                    # failing probes move no breaker
    now[0] = 2.0
    assert hc.apply(w, True) == READY
    assert w.breaker.state == HALF_OPEN and w.breaker.health_readmissions == 1
    assert hc.apply(w, True) is None                  # staying ready readmits nothing more
    assert w.breaker.health_readmissions == 1
