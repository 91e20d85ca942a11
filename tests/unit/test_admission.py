"""Admission without sockets: the legacy limiter's core (tokens, FIFO queue, timeouts,
refill), its pipeline stage (end hooks, parked requests, clients that leave), the
priority scheduler's stage (classes, tenant ceilings, the requests/second check,
preemption through the victim's producer) and how the gateway builds them from the
settings (SMG's defaults; configuration errors named by their flag)."""
from __future__ import annotations

import asyncio
import logging
import os

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smg.admission import admit as A
from smg.admission import limiter as L
from smg.admission import scheduler as S
from smg.admission.limiter import ConcurrencyLimiter
from smg.config.load import build_config
from smg.errors import ConfigError
from smg.server import filters as F
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.server.timers import TimerWheel
from smg.testing.pathbench import PathBench

CHAT = next(e for e in ENDPOINTS if e.path == "/v1/chat/completions")


# -- the limiter core -----------------------------------------------------------------


def test_tokens_bound_concurrency_and_all_come_back():
    lim = ConcurrencyLimiter(2, 0.0, 0, 1.0)
    assert lim.try_acquire(0.0) and lim.try_acquire(0.0) and not lim.try_acquire(100.0)  # no refill, ever
    assert lim.release(1.0) == () and lim.try_acquire(1.0)
    lim.release(2.0)
    lim.release(2.0)
    assert lim.available(50.0) == lim.capacity == 2


def test_waiters_are_admitted_first_in_first_out_on_release():
    lim = ConcurrencyLimiter(1, 0.0, 3, 10.0)
    assert lim.try_acquire(0.0)
    a, b, c = (lim.enqueue(x, 0.0) for x in "abc")
    assert lim.enqueue("d", 0.0) is None and lim.queued == 3
    assert [t.item for t in lim.release(1.0)] == ["a"] and a.state == L.ADMITTED
    assert lim.cancel(b) and not lim.cancel(b) and b.state == L.CANCELLED
    assert [t.item for t in lim.release(2.0)] == ["c"]
    assert not lim.try_acquire(2.0)          # c holds the token now
    lim.release(3.0)
    assert lim.available(3.0) == 1 and lim.queued == 0


def test_a_newcomer_never_overtakes_the_queue():
    lim = ConcurrencyLimiter(1, 10.0, 2, 10.0)   # refill: a token every 0.1 s
    assert lim.try_acquire(0.0)
    t = lim.enqueue("a", 0.0)
    assert lim.next_wakeup(0.0) == pytest.approx(0.1)
    assert not lim.try_acquire(0.5)              # a token has refilled, but "a" is first
    assert lim.poll(0.5) == [t] and t.state == L.ADMITTED
    assert lim.next_wakeup(0.5) is None


def test_queue_timeouts_expire_in_order():
    lim = ConcurrencyLimiter(1, 0.0, 2, 5.0)
    lim.try_acquire(0.0)
    a = lim.enqueue("a", 1.0)
    b = lim.enqueue("b", 2.0)
    assert lim.next_wakeup(2.0) == 6.0 and not lim.expire(5.9)
    assert lim.expire(6.5) == [a] and a.state == L.EXPIRED and lim.next_wakeup(6.5) == 7.0
    assert lim.expire(7.0) == [b] and lim.queued == 0


def test_retry_after_follows_the_refill_rate():
    assert ConcurrencyLimiter(1, 0.0, 0, 1.0).retry_after(0.0) == 1
    lim = ConcurrencyLimiter(1, 0.25, 0, 1.0)    # one token per 4 s
    lim.try_acquire(0.0)
    assert lim.retry_after(0.0) == 4


class LimiterMachine(RuleBasedStateMachine):
    """Acquire/queue/release/cancel/expire in any order: tokens out + tokens free is
    always the capacity (no refill), every ticket ends once."""

    def __init__(self) -> None:
        super().__init__()
        self.lim = ConcurrencyLimiter(3, 0.0, 2, 4.0)
        self.now = 0.0
        self.held = 0
        self.queued: list = []

    @rule()
    def arrive(self):
        if self.lim.try_acquire(self.now):
            assert not self.queued
            self.held += 1
        else:
            t = self.lim.enqueue(object(), self.now)
            assert (t is None) == (len(self.queued) == 2)
            if t is not None:
                self.queued.append(t)

    @precondition(lambda self: self.held)
    @rule()
    def release(self):
        self.held -= 1
        for t in self.lim.release(self.now):
            assert t is self.queued.pop(0)   # FIFO
            self.held += 1

    @precondition(lambda self: self.queued)
    @rule(i=st.integers(0, 5))
    def cancel(self, i):
        t = self.queued.pop(i % len(self.queued))
        assert self.lim.cancel(t)

    @rule(dt=st.sampled_from([1.0, 3.0, 5.0]))
    def tick(self, dt):
        self.now += dt
        for t in self.lim.expire(self.now):
            assert t is self.queued.pop(0) and t.state == L.EXPIRED

    @invariant()
    def tokens_are_conserved(self):
        assert self.held + self.lim.available(self.now) == 3
        assert self.lim.queued == len(self.queued)


LimiterMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestLimiterMachine = LimiterMachine.TestCase


# -- the stages, on a loop without sockets ---------------------------------------------


class Conn:
    """The sink methods a filter and a waiting request use."""

    def __init__(self) -> None:
        self.errors: list = []
        self.producer = None
        self.handled = 0

    def reply_error(self, status, message, code=None, close=False, extra=None) -> None:
        self.errors.append((status, code, dict(extra or [])))

    def set_producer(self, p) -> None:
        self.producer = p

    def handler_failed(self) -> None:
        raise AssertionError("a filter failed")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def request(headers=(), tenant=None) -> RequestContext:
    ctx = RequestContext(b"POST", b"/v1/chat/completions", b"/v1/chat/completions", list(headers), CHAT, 0.0)
    ctx.rid = b"chatcmpl-1"
    ctx.tenant = tenant
    return ctx


def ended(ctx, status=200) -> None:
    """What Site.request_ended does with the hooks."""
    ctx.status = ctx.status or status
    hooks = ctx.end_hooks()
    ctx.on_end = None
    for fn in hooks:
        fn(ctx)


def dispatch(stage, conn, ctx, timers):
    """Runs the one-stage chain; the handler marks the connection handled."""
    def handler(c, x):
        c.handled += 1
    F.run((stage,), handler, conn, ctx, 0, timers, 1e9)


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def turn():
    for _ in range(3):
        await asyncio.sleep(0)


def legacy(capacity=1, queue=2, timeout=5.0, rate=0.0):
    clock = Clock()
    timers = TimerWheel(0.1)
    stage = A.LegacyAdmission(ConcurrencyLimiter(capacity, rate, queue, timeout), F.Reply, timers, clock)
    return stage, timers, clock


def test_legacy_fast_path_adds_one_shared_hook_and_gives_the_token_back():
    stage, timers, clock = legacy(capacity=2)
    a, b = request(), request()
    assert stage(Conn(), a) is None and stage(Conn(), b) is None
    assert a.end_hooks() == (stage._hook,) and b.end_hooks()[0] is a.end_hooks()[0]  # nothing per request
    ended(a)
    ended(b)
    assert stage.idle() and len(timers) == 0


def test_legacy_queue_admits_the_waiter_when_a_slot_frees():
    async def go():
        stage, timers, clock = legacy()
        c1, c2 = Conn(), Conn()
        x1, x2 = request(), request()
        dispatch(stage, c1, x1, timers)
        dispatch(stage, c2, x2, timers)
        assert c1.handled == 1 and c2.handled == 0 and isinstance(c2.producer, F.Waiter)
        ended(x1)
        await turn()
        assert c2.handled == 1 and c2.producer is None
        ended(x2)
        assert stage.idle()
    run(go())


def test_legacy_queue_timeout_answers_408_from_the_timer_wheel():
    async def go():
        stage, timers, clock = legacy(timeout=2.0)
        x1, x2, c2 = request(), request(), Conn()
        stage(Conn(), x1)
        dispatch(stage, c2, x2, timers)
        clock.t += 2.5
        for obj in timers.expire(clock.t):
            obj.on_timeout()
        await turn()
        assert c2.errors == [(408, "queue_timeout", {})] and c2.handled == 0
        ended(x2, 408)
        ended(x1)
        assert stage.idle() and stage._rejected[0] == 1 and stage._allowed[0] == 1
    run(go())


def test_legacy_full_queue_and_no_queue_answer_429_with_retry_after():
    async def go():
        stage, timers, clock = legacy(queue=1)
        stage(Conn(), request())
        assert isinstance(stage(Conn(), request()), asyncio.Future)
        v = stage(Conn(), request())
        assert type(v) is F.Reply and (v.status, v.code) == (429, "admission_queue_full")
        assert v.headers == [(b"retry-after", b"1")]
        stage0, _, _ = legacy(queue=0)
        stage0(Conn(), request())
        v = stage0(Conn(), request())
        assert (v.status, v.code) == (429, "admission_queue_full")
    run(go())


def test_a_client_leaving_the_queue_frees_its_place():
    async def go():
        stage, timers, clock = legacy()
        x1 = request()
        stage(Conn(), x1)
        c2, x2 = Conn(), request()
        dispatch(stage, c2, x2, timers)
        c2.producer.abort()           # the connection's client left (protocol._client_gone)
        ended(x2, 499)
        assert stage.core.queued == 0
        ended(x1)
        await turn()
        assert c2.handled == 0 and stage.idle()
    run(go())


def test_a_request_granted_a_slot_that_leaves_before_resuming_gives_it_back():
    async def go():
        stage, timers, clock = legacy()
        x1 = request()
        stage(Conn(), x1)
        c2, x2 = Conn(), request()
        dispatch(stage, c2, x2, timers)
        waiter = c2.producer
        ended(x1)                     # grants x2 (its resume is a loop turn away) ...
        waiter.abort()                # ... but its client leaves first
        ended(x2, 499)
        await turn()
        assert c2.handled == 0 and stage.idle()
    run(go())


def test_with_refill_the_timer_admits_the_head_when_a_token_is_due():
    async def go():
        stage, timers, clock = legacy(rate=2.0)     # a token per 0.5 s
        stage(Conn(), request())
        c2, x2 = Conn(), request()
        dispatch(stage, c2, x2, timers)
        # the waiting request's deadline, and one entry for the stage (not one per waiter)
        assert len(timers) == 2 and sum(o is stage for b in timers._buckets.values() for o in b) == 1
        clock.t += 0.7
        for obj in timers.expire(clock.t):
            obj.on_timeout()
        await turn()
        assert c2.handled == 1 and len(timers) == 0
    run(go())


# -- the priority scheduler's stage ---------------------------------------------------


class FakeExchange:
    def __init__(self) -> None:
        self.preemptible = True
        self.preempted = None

    def preempt(self, status, message, code, headers) -> bool:
        self.preempted = (status, code, dict(headers))
        self.preemptible = False
        return True


def scheduler_bench(tmp_path, yaml_text="", **settings_):
    path = tmp_path / "prio.yaml"
    path.write_text(yaml_text or "classes:\n" + "".join(
        f"  {c}: {{reserved_floor: 0, reserved_per_slot: 0.0}}\n" for c in S.CLASS_NAMES))
    values = dict(priority_scheduler_enabled=True, priority_scheduler_config=str(path), worker_capacity_override=1)
    values.update(settings_)
    return PathBench(metrics=True, access_log=False, **values)


def test_the_gateway_path_through_the_scheduler_gives_every_slot_back(tmp_path):
    pb = scheduler_bench(tmp_path)
    stage = pb.gw.admission
    assert isinstance(stage, A.PriorityAdmission) and stage in pb.gw.routes.exact[b"/v1/chat/completions"].chain
    for _ in range(3):
        pb.one()
        pb.one_stream()
    assert stage.idle() and stage._admitted[S.DEFAULT][0] == 6
    assert stage.core.capacity == 1 and stage.source == S.SOURCE_OVERRIDE
    pb.close()


def test_priority_is_clamped_to_the_tenants_ceiling_and_counted(tmp_path):
    pb = scheduler_bench(tmp_path, worker_capacity_override=10, priority_scheduler_tenant_metric_top_n=1,
                         yaml_text="classes:\n  system: {reserved_floor: 0}\n  interactive: {reserved_floor: 0}\n"
                                   "tenant_policies:\n  auth:acme: {max_class: interactive}\n")
    stage = pb.gw.admission
    m = stage._m
    ctxs = [request([(b"x-smg-priority", b"system")], "auth:acme"),        # clamped to interactive
            request([(b"x-smg-priority", b"system")], None),               # anonymous: default
            request([(b"x-smg-priority", b"urgent")], "auth:other"),       # unknown → default; label past top-N
            request([(b"x-smg-priority", b"bulk")], "auth:acme")]
    for ctx in ctxs:
        assert stage(Conn(), ctx) is None
    assert stage.core.counts == [1, 2, 1, 0]
    assert m["clamp"].value(("auth:acme", "system", "interactive")) == 1
    assert m["clamp"].value(("other", "system", "default")) == 1
    assert m["unknown"].value(("other",)) == 1
    for ctx in ctxs:
        ended(ctx)
    assert stage.idle()
    pb.close()


def test_the_requests_per_second_check_refuses_before_taking_a_slot(tmp_path):
    pb = scheduler_bench(tmp_path, worker_capacity_override=10, rate_limit_tokens_per_second=1.0,
                         max_concurrent_requests=2)
    stage = pb.gw.admission
    a, b = request(), request()
    assert stage(Conn(), a) is None and stage(Conn(), b) is None   # the bucket starts full (2)
    v = stage(Conn(), request())
    assert (v.status, v.code) == (429, "scheduler_queue_full") and stage.core.inflight == 2
    # as SMG 1.13 (scheduler/admission.rs): only the rejection is counted, and not as an admit outcome
    assert pb.gw.metrics.rate_limit.value(("rejected",)) == 1 and pb.gw.metrics.rate_limit.value(("allowed",)) == 0
    assert stage._m["admit"].value(("default", "rejected_queue_full")) == 0
    ended(a)
    ended(b)
    pb.close()


def test_a_system_request_preempts_a_bulk_one_that_has_sent_nothing(tmp_path):
    pb = scheduler_bench(tmp_path)
    stage = pb.gw.admission
    victim_conn, victim = Conn(), request([(b"x-smg-priority", b"bulk")])
    assert stage(victim_conn, victim) is None
    victim_conn.producer = ex = FakeExchange()
    sys_ctx = request([(b"x-smg-priority", b"system")], "auth:ops")
    stage.tenants["auth:ops"] = S.SYSTEM
    assert stage(Conn(), sys_ctx) is None
    assert ex.preempted == (503, "scheduler_preempted", {b"retry-after": b"1", b"x-smg-preempted": b"true"})
    assert stage.core.counts == [0, 0, 0, 1]
    ended(victim, 503)                       # the victim's end hook finds its slot gone
    assert stage.core.counts == [0, 0, 0, 1]
    assert stage._m["preemption"].value(("system", "bulk")) == 1
    assert stage._m["admit"].value(("bulk", "preempted")) == 1
    ended(sys_ctx)
    assert stage.idle()
    pb.close()


def test_a_victim_that_has_started_streaming_is_not_preempted(tmp_path):
    async def go():
        pb = scheduler_bench(tmp_path)
        stage = pb.gw.admission
        vc, victim = Conn(), request([(b"x-smg-priority", b"bulk")])
        stage(vc, victim)
        vc.producer = ex = FakeExchange()
        ex.preemptible = False               # its first byte went out
        stage.default_max = S.SYSTEM
        v = stage(Conn(), request([(b"x-smg-priority", b"system")]))
        assert isinstance(v, asyncio.Future) and ex.preempted is None and stage.core.queued == 1
        assert not stage.core.running[S.BULK]   # never asked again
        v.cancel()
        pb.close()
    run(go())


# -- building from the settings -------------------------------------------------------


def build(cfg):
    return A.build(cfg, registry=None, ready="ready", reply=F.Reply, timers=None, now=lambda: 0.0)


def test_the_limiter_is_on_by_default_with_smgs_capacity():
    cfg = build_config({})
    assert cfg.max_concurrent_requests == -1 and cfg.queue_size == 100 and cfg.queue_timeout_secs == 60
    assert A.max_concurrent(cfg) == max(1024 * os.cpu_count(), 4096)
    pb = PathBench(metrics=False, access_log=False)
    assert isinstance(pb.gw.admission, A.LegacyAdmission) and pb.gw.admission.core.capacity >= 4096
    pb.one()
    assert pb.gw.admission.idle()
    pb.close()


def test_max_concurrent_requests_zero_leaves_the_stage_out():
    pb = PathBench(metrics=False, access_log=False, max_concurrent_requests=0)
    assert pb.gw.admission is None
    assert not any(isinstance(s, (A.LegacyAdmission, A.PriorityAdmission))
                   for r in pb.gw.routes.exact.values() for s in r.chain)
    pb.close()


def test_only_inference_routes_are_admitted():
    pb = PathBench(metrics=False, access_log=False)
    routes = pb.gw.routes.exact
    assert pb.gw.admission in routes[b"/v1/chat/completions"].chain
    assert pb.gw.admission not in routes[b"/health"].chain and pb.gw.admission not in routes[b"/v1/models"].chain
    pb.close()


@pytest.mark.parametrize("text, match", [
    ("classes: {vip: {}}\n", "unknown class 'vip'"),
    ("classes: {bulk: {queue_timeout_secs: 0}}\n", "must be > 0"),
    ("[1, 2\n", "not valid YAML"),
    ("", "reservations \\(170 slots\\) exceed"),   # SMG defaults on 100 slots: floors 128 + 32, 10% for default
])
def test_an_unusable_scheduler_config_names_its_flag(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    cfg = build_config({"priority_scheduler_enabled": True, "priority_scheduler_config": str(path),
                        "worker_capacity_override": 100})
    with pytest.raises(ConfigError, match=match) as e:
        build(cfg)
    assert e.value.key == "--priority-scheduler-config"


def test_settings_that_cannot_take_effect_are_logged(caplog):
    with caplog.at_level(logging.WARNING, "smg.admission"):
        build(build_config({"priority_scheduler_enabled": True, "queue_size": 5}))
        build(build_config({"worker_capacity_override": 3}))
        assert build(build_config({"max_concurrent_requests": 0, "rate_limit_tokens_per_second": 5})) is None
    text = caplog.text
    assert "--queue-size is ignored with --priority-scheduler-enabled" in text
    assert "--worker-capacity-override is ignored without --priority-scheduler-enabled" in text
    assert "--rate-limit-tokens-per-second is ignored with --max-concurrent-requests 0" in text


def test_capacity_comes_from_the_healthy_workers_reports():
    class W:
        def __init__(self, status, engine):
            self.status, self.engine = status, engine

    workers = [W("ready", {"max_running_requests": 256}), W("ready", None), W("not_ready", {"max_running_requests": 9}),
               W("ready", {"max_running_requests": "x"})]
    assert A.healthy_reports(workers, "ready") == [256, None, None]
