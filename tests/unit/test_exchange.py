"""The exchange without sockets: a fake response sink and fake upstream legs (in the
style of h11's ConnectionPair), driven event by event.

Covers retries before the first byte, client gone mid-stream (leg aborted), a slow
client (leg paused), the deadline across attempts and backoffs, and — walked by a
Hypothesis state machine over the attempt table — that every path reaches DONE
exactly once, ends each attempt exactly once and answers the client at most once.
"""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smg.config.load import build_config
from smg.errors import ConnectFailed, UpstreamClosed
from smg.http1.events import Data, EndOfMessage, Response
from smg.routing.policies import PolicyRegistry
from smg.server import exchange as X
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.server.exchange import Exchange, ExchangeDeps
from smg.server.selection import Selector
from smg.server.timers import TimerWheel
from smg.workers.registry import WorkerRegistry
from smg.workers.retry import RetryPolicy
from smg.workers.worker import READY, Worker

CHAT = next(e for e in ENDPOINTS if e.path == "/v1/chat/completions")


class FakeSink:
    """Records what the exchange asks of the client connection."""

    def __init__(self) -> None:
        self.producer = None
        self.head = None
        self.data: list = []
        self.ended = 0
        self.errors: list = []
        self.failed: list = []

    @property
    def terminals(self) -> int:
        return self.ended + len(self.errors) + len(self.failed)

    def set_producer(self, p) -> None:
        self.producer = p

    def send_head(self, status, headers, length, skip, extra) -> None:
        assert self.head is None, "two heads"
        self.head = (status, length, extra)

    def send(self, pieces, end) -> None:
        assert self.head is not None, "data before the head"
        assert not self.terminals, "data after the end"
        self.data.extend(pieces)
        if end:
            self.ended += 1

    def reply_error(self, status, message, code=None, close=False, extra=None) -> None:
        assert self.head is None, "an error reply after the head went out"
        self.errors.append((status, code))

    def fail(self, event) -> None:
        assert self.head is not None
        self.failed.append(event)


class FakeLeg:
    def __init__(self, worker, owner) -> None:
        self.worker = worker
        self.owner = owner
        self.started = False
        self.paused = False
        self.aborted = False
        self.finished = None
        self.errored = False   # a leg that reported an error is spent (the leg contract)

    def fail(self, err) -> None:
        self.errored = True
        self.owner.on_leg_error(err)

    def start(self, ctx, worker, trace) -> None:
        self.started = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def finish(self, keep_alive) -> None:
        self.finished = keep_alive

    def abort(self) -> None:
        self.aborted = True

    @property
    def live(self) -> bool:
        return self.started and not self.aborted and not self.errored and self.finished is None


class Handle:
    def __init__(self, fn) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Rig:
    """One exchange with its fakes; ``n`` ready workers behind round_robin."""

    def __init__(self, n: int = 2, retries: int = 3, **settings) -> None:
        self.cfg = build_config(dict({"policy": "round_robin", "retry_max_retries": retries,
                                      "request_timeout_secs": 10.0}, **settings))
        self.registry = WorkerRegistry()
        self.policies = PolicyRegistry(self.registry, "round_robin", self.cfg)
        self.workers = []
        for i in range(n):
            w = Worker(f"http://10.0.0.{i + 1}:8000", ("m",))
            self.registry.add(w)
            self.registry.set_status(w, READY)
            self.workers.append(w)
        self.timers = TimerWheel(0.1)
        self.now = 0.0
        self.legs: list = []
        self.handles: list = []
        self.outcomes: list = []
        self.retries: list = []
        self.deps = ExchangeDeps(
            self.cfg, RetryPolicy.from_config(self.cfg), self.timers, now=lambda: self.now, clock=lambda: self.now,
            schedule=self._schedule, selector=Selector(self.registry, self.policies), open_leg=self._open_leg,
            record_outcome=lambda w, ok: self.outcomes.append((w, ok)),
            on_retry=lambda ctx, w, attempt, delay, failed: self.retries.append((w, attempt)))
        self.sink = FakeSink()
        self.ctx = RequestContext(b"POST", b"/v1/chat/completions", b"/v1/chat/completions", [], CHAT, 0.0)
        self.ctx.raw = b'{"model":"m","messages":[]}'
        self.ctx.body = {"model": "m", "messages": []}
        self.ctx.rid = b"chatcmpl-test"
        assert Selector(self.registry, self.policies).first(self.sink, self.ctx) is None
        self.ex = Exchange(self.deps, self.sink, self.ctx)

    def _schedule(self, delay, fn) -> Handle:
        h = Handle(fn)
        self.handles.append(h)
        return h

    def _open_leg(self, worker, owner) -> FakeLeg:
        leg = FakeLeg(worker, owner)
        self.legs.append(leg)
        return leg

    @property
    def leg(self) -> FakeLeg:
        return self.legs[-1]

    def fire_backoff(self) -> None:
        (h,) = [h for h in self.handles if not h.cancelled]
        self.handles.remove(h)
        h.fn()

    def expire(self, now: float) -> None:
        self.now = now
        for obj in self.timers.expire(now):
            obj.on_timeout()

    def inflight(self) -> int:
        return sum(w.inflight for w in self.workers)


def head(status: int = 200, length: int = 5, sse: bool = False) -> Response:
    ctype = b"text/event-stream" if sse else b"application/json"
    return Response(status, b"", b"1.1", [(b"content-type", ctype)], -1 if sse else length, sse, True)


def test_plain_answer_relayed_and_leg_pooled():
    r = Rig()
    r.ex.start()
    assert r.sink.producer is r.ex and r.leg.started and r.inflight() == 1
    r.leg.owner.on_leg_events([head(200, 5), Data(b"hello"), EndOfMessage()])
    routed = ((b"x-smg-routed-worker-id", r.ctx.worker.url.encode()),)
    assert r.sink.head == (200, 5, routed) and r.sink.data == [b"hello"] and r.sink.ended == 1
    assert r.leg.finished is True and r.inflight() == 0 and r.ex.state == X.DONE
    assert r.outcomes == [(r.ctx.worker, True)] and len(r.timers) == 0


def test_retryable_status_before_first_byte_retries_on_another_worker():
    r = Rig()
    r.ex.start()
    first = r.leg
    first.owner.on_leg_events([head(503, 0), EndOfMessage()])
    # read whole, so its connection is kept
    assert first.finished is True and r.sink.head is None and r.ex.state == X.BACKOFF and r.inflight() == 0
    assert r.retries == [(first.worker, 1)]
    r.fire_backoff()
    second = r.leg
    assert second is not first and second.worker is not first.worker
    second.owner.on_leg_events([head(200, 2), Data(b"ok"), EndOfMessage()])
    assert r.sink.head[0] == 200 and r.sink.ended == 1
    assert [ok for _, ok in r.outcomes] == [False, True] and r.ctx.attempts == 2


def test_transport_error_then_retries_exhausted_answers_with_the_error_status():
    r = Rig(retries=2)
    r.ex.start()
    r.leg.fail(ConnectFailed("refused"))
    r.fire_backoff()
    r.leg.fail(ConnectFailed("refused"))
    assert r.sink.errors == [(502, None)] and r.ctx.error_type == "connect_failed"
    assert r.ex.state == X.DONE and r.inflight() == 0 and not [h for h in r.handles if not h.cancelled]


def test_last_attempt_relays_the_retryable_answer_as_it_is():
    r = Rig(retries=1)
    r.ex.start()
    r.leg.owner.on_leg_events([head(503, 4), Data(b"busy"), EndOfMessage()])
    assert r.sink.head[0] == 503 and r.sink.data == [b"busy"] and r.sink.ended == 1
    assert r.outcomes == [(r.ctx.worker, False)]


def test_client_gone_mid_stream_aborts_the_leg_without_blaming_the_worker():
    r = Rig()
    r.ex.start()
    leg = r.leg
    leg.owner.on_leg_events([head(200, sse=True), Data(b"data: 1\n\n")])
    r.ex.abort()
    assert leg.aborted and r.inflight() == 0 and r.outcomes == [] and r.ctx.error_type == "client_disconnected"
    leg.owner.on_leg_events([Data(b"data: 2\n\n"), EndOfMessage()])  # late bytes are dropped
    assert r.sink.data == [b"data: 1\n\n"] and r.sink.terminals == 0 and len(r.timers) == 0


def test_slow_client_pauses_the_leg_and_a_new_attempt_starts_paused():
    r = Rig()
    r.ex.start()
    r.ex.pause()
    assert r.leg.paused
    r.leg.owner.on_leg_events([head(500, 0), EndOfMessage()])
    r.fire_backoff()
    assert r.leg.paused  # the retry's leg inherits the backpressure
    r.ex.resume()
    assert not r.leg.paused


def test_deadline_spans_attempts_and_backoffs():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(502, 0), EndOfMessage()])
    assert r.ex.state == X.BACKOFF
    r.expire(10.2)
    assert r.sink.errors == [(504, "call_upstream_timeout")] and r.ex.state == X.DONE
    assert all(h.cancelled for h in r.handles) and len(r.legs) == 1


def test_timeout_mid_stream_cuts_with_an_sse_error_event():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(200, sse=True), Data(b"data: 1\n\n")])
    r.expire(10.2)
    assert r.leg.aborted and len(r.sink.failed) == 1 and b"upstream request timed out" in r.sink.failed[0]
    assert r.outcomes == [(r.ctx.worker, False)]


def test_worker_failing_mid_stream_cuts_the_answer():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(200, 10), Data(b"half")])
    r.leg.fail(UpstreamClosed("gone"))
    assert r.sink.failed == [None] and r.ctx.error_type == "upstream_closed_mid_response"
    assert r.ex.state == X.DONE and r.inflight() == 0


def test_an_input_outside_the_table_is_refused():
    r = Rig()
    with pytest.raises(X.InvalidTransition):
        r.ex._go(X.END)


def test_preemption_before_the_first_byte_answers_503_and_stops_the_worker():
    r = Rig()
    r.ex.start()
    leg = r.leg
    assert r.ex.preemptible
    hdrs = [(b"retry-after", b"1"), (b"x-smg-preempted", b"true")]
    assert r.ex.preempt(503, "request preempted by higher-priority traffic", "scheduler_preempted", hdrs)
    assert r.sink.errors == [(503, "scheduler_preempted")] and leg.aborted and r.inflight() == 0
    assert r.outcomes == [] and r.ex.state == X.DONE and len(r.timers) == 0
    assert not r.ex.preempt(503, "again", "scheduler_preempted", hdrs)  # once only


def test_a_streaming_answer_is_never_preempted():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(200, sse=True), Data(b"data: 1\n\n")])
    assert not r.ex.preemptible
    assert not r.ex.preempt(503, "x", "scheduler_preempted", [])
    assert r.sink.errors == [] and not r.leg.aborted and r.ex.state == X.STREAMING


def test_preemption_during_a_backoff_cancels_the_retry():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(503, 0), EndOfMessage()])
    assert r.ex.state == X.BACKOFF and r.ex.preemptible
    assert r.ex.preempt(503, "x", "scheduler_preempted", [])
    assert all(h.cancelled for h in r.handles) and r.sink.errors == [(503, "scheduler_preempted")]


def test_a_5xx_with_a_validation_message_is_relayed_at_once_and_blames_nobody():
    r = Rig(n=3)
    r.ex.start()
    r.leg.owner.on_leg_events([head(500, 30), Data(b'{"message":"validation error"}')])
    assert r.sink.head is None and r.ex.state == X.WAITING       # held until it is read
    r.leg.owner.on_leg_events([EndOfMessage()])
    assert r.sink.head[0] == 500 and r.sink.data == [b'{"message":"validation error"}'] and r.sink.ended == 1
    assert r.outcomes == [] and r.ctx.attempts == 1 and r.leg.finished is True


def test_the_same_500_from_two_workers_is_relayed_without_verdicts():
    r = Rig(n=3)
    r.ex.start()
    r.leg.owner.on_leg_events([head(500, 4), Data(b"boom"), EndOfMessage()])
    assert r.ex.state == X.BACKOFF and r.outcomes == []      # the first verdict waits
    r.fire_backoff()
    assert r.leg.worker is not r.legs[0].worker
    r.leg.owner.on_leg_events([head(500, 4), Data(b"boom"), EndOfMessage()])
    assert r.sink.head[0] == 500 and r.sink.data == [b"boom"] and r.outcomes == [] and r.ctx.attempts == 2


def test_different_500s_exclude_each_worker_and_count_each():
    r = Rig(n=2, retries=5)
    r.ex.start()
    first = r.leg.worker
    r.leg.owner.on_leg_events([head(500, 2), Data(b"b1"), EndOfMessage()])
    r.fire_backoff()
    second = r.leg.worker
    r.leg.owner.on_leg_events([head(500, 2), Data(b"b2"), EndOfMessage()])
    # no worker left that has not answered 500: the last answer is relayed at once
    assert second is not first and r.sink.head[0] == 500 and r.sink.data == [b"b2"]
    assert sorted(ok for _, ok in r.outcomes) == [False, False] and r.ctx.attempts == 2


def test_a_5xx_then_success_counts_the_5xx_before_the_success():
    r = Rig(n=2)
    r.ex.start()
    r.leg.owner.on_leg_events([head(502, 1), Data(b"x"), EndOfMessage()])
    r.fire_backoff()
    r.leg.owner.on_leg_events([head(200, 2), Data(b"ok"), EndOfMessage()])
    assert [ok for _, ok in r.outcomes] == [False, True]


def test_a_stream_without_done_gets_one_error_event_and_one_after_done_is_clean():
    r = Rig()
    r.ex.start()
    r.leg.owner.on_leg_events([head(200, sse=True), Data(b"data: 1\n\n"), EndOfMessage()])
    assert r.sink.ended == 1 and r.sink.data[-1].count(b'"error"') == 1
    r2 = Rig()
    r2.ex.start()
    r2.leg.owner.on_leg_events([head(200, sse=True), Data(b"data: 1\n\ndata: [DONE]\n\ndata: late\n\n")])
    r2.leg.fail(UpstreamClosed("gone"))
    assert r2.sink.data == [b"data: 1\n\ndata: [DONE]\n\n"] and r2.sink.ended == 1 and r2.sink.failed == []
    assert r2.outcomes == [(r2.ctx.worker, True)]


def test_every_table_row_leads_to_a_known_state():
    assert set(X.TRANSITIONS.values()) <= set(X.STATES)
    assert {s for s, _ in X.TRANSITIONS} == set(X.STATES) - {X.DONE}
    assert all((s, X.CLIENT_GONE) in X.TRANSITIONS for s in X.STATES if s != X.DONE)


class AttemptMachine(RuleBasedStateMachine):
    """Random interleavings of worker, client, clock and scheduler (preemption) inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.r = Rig(n=2, retries=3)
        self.r.ex.start()
        self.done_seen = 0

    def live_leg(self):
        legs = [leg for leg in self.r.legs if leg.live]
        return legs[-1] if legs else None

    @precondition(lambda self: self.live_leg() is not None and self.r.sink.head is None)
    @rule(status=st.sampled_from([200, 404, 429, 500, 503]), sse=st.booleans())
    def worker_head(self, status, sse):
        self.live_leg().owner.on_leg_events([head(status, 3, sse)])

    @precondition(lambda self: self.live_leg() is not None and self.r.sink.head is not None)
    @rule(end=st.booleans())
    def worker_data(self, end):
        self.live_leg().owner.on_leg_events([Data(b"abc")] + ([EndOfMessage()] if end else []))

    @precondition(lambda self: self.live_leg() is not None and self.r.ex.held is not None)
    @rule(body=st.sampled_from([b"boom", b"validation error: bad value"]))
    def worker_error_body(self, body):
        # the rest of a held 5xx answer: judged, then relayed or retried
        self.live_leg().owner.on_leg_events([Data(body), EndOfMessage()])

    @precondition(lambda self: self.live_leg() is not None)
    @rule()
    def worker_error(self):
        self.live_leg().fail(UpstreamClosed("reset"))

    @precondition(lambda self: any(not h.cancelled for h in self.r.handles))
    @rule()
    def backoff_over(self):
        self.r.fire_backoff()

    @rule()
    def deadline(self):
        self.r.expire(self.r.now + 11)

    @rule()
    def client_gone(self):
        self.r.ex.abort()

    @rule()
    def preempt(self):
        # the priority scheduler takes the slot: only before anything reached the client
        r = self.r
        could = r.ex.preemptible
        assert could == (r.ex.state in (X.WAITING, X.BACKOFF))
        verdicts = len(r.outcomes)
        done = r.ex.preempt(503, "preempted", "scheduler_preempted", [(b"retry-after", b"1")])
        assert done == could
        if done:
            assert r.sink.head is None and r.sink.errors[-1] == (503, "scheduler_preempted")
            assert r.ctx.error_type == "scheduler_preempted" and r.sink.producer is None
            assert len(r.outcomes) == verdicts  # the worker is not blamed

    @rule(down=st.booleans())
    def worker_status(self, down):
        # workers leave and come back between attempts
        self.r.registry.set_status(self.r.workers[0], "not_ready" if down else READY)

    @invariant()
    def at_most_one_answer_and_attempts_balanced(self):
        r = self.r
        assert r.sink.terminals <= 1
        assert r.ex.state in X.STATES
        assert r.inflight() == (1 if r.ex.in_attempt else 0)
        assert sum(1 for leg in r.legs if leg.live) <= 1
        if r.ex.state == X.DONE:
            assert not r.ex.in_attempt and len(r.timers) == 0
            assert not [h for h in r.handles if not h.cancelled]
            assert not any(leg.live for leg in r.legs)
            # the client was answered once, unless it left (nobody to answer)
            assert r.sink.terminals == 1 or r.ctx.error_type == "client_disconnected"
        if r.ctx.error_type == "scheduler_preempted":
            assert r.ex.state == X.DONE and r.sink.head is None
        # attempts ended = outcomes recorded + the no-verdict (client gone) end
        assert len(r.outcomes) <= r.ctx.attempts


AttemptMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestAttemptMachine = AttemptMachine.TestCase
