"""The filter chain without sockets: verdicts, waits that resume, time out, or end
because the client left — and the chain ends exactly once either way."""
from __future__ import annotations

import asyncio

import pytest

from smg.server import filters as F
from smg.server.timers import TimerWheel


class Conn:
    def __init__(self) -> None:
        self.errors: list = []
        self.producer = None
        self.failed = 0

    def reply_error(self, status, message, code=None, close=False, extra=None) -> None:
        self.errors.append((status, code))

    def set_producer(self, p) -> None:
        self.producer = p

    def handler_failed(self) -> None:
        self.failed += 1


class Ctx:
    rid = b"r-1"
    error_type = None


def run(chain, timers=None, deadline=100.0):
    conn, ctx, handled = Conn(), Ctx(), []
    F.run(tuple(chain), lambda c, x: handled.append(x), conn, ctx, 0, timers, deadline)
    return conn, ctx, handled


def test_continue_runs_every_filter_then_the_handler():
    seen = []
    conn, ctx, handled = run([lambda c, x: seen.append(1), lambda c, x: seen.append(2)])
    assert seen == [1, 2] and handled == [ctx] and conn.errors == []


def test_reply_answers_in_the_api_format_and_stops_the_chain():
    seen = []
    conn, _, handled = run([lambda c, x: F.Reply(429, "slow down", "rate_limit_exceeded"),
                            lambda c, x: seen.append("never")])
    assert conn.errors == [(429, "rate_limit_exceeded")] and handled == [] and seen == []


def test_stop_ends_the_chain_silently():
    conn, _, handled = run([lambda c, x: F.STOP])
    assert handled == [] and conn.errors == []


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    lp.close()
    asyncio.set_event_loop(None)


def test_a_wait_resumes_with_its_result_as_the_verdict(loop):
    fut = loop.create_future()
    after = []
    timers = TimerWheel(0.1)
    conn, ctx, handled = run([lambda c, x: fut, lambda c, x: after.append(1)], timers)
    assert handled == [] and isinstance(conn.producer, F.Waiter) and len(timers) == 1
    fut.set_result(F.CONTINUE)
    loop.run_until_complete(asyncio.sleep(0))
    assert after == [1] and handled == [ctx] and conn.producer is None and len(timers) == 0


def test_a_wait_can_end_in_a_reply(loop):
    fut = loop.create_future()
    conn, _, handled = run([lambda c, x: fut], TimerWheel(0.1))
    fut.set_result(F.Reply(503, "queue full", "queue_full"))
    loop.run_until_complete(asyncio.sleep(0))
    assert conn.errors == [(503, "queue_full")] and handled == []


def test_a_wait_past_its_deadline_answers_503_and_cancels(loop):
    fut = loop.create_future()
    timers = TimerWheel(0.1)
    conn, ctx, handled = run([lambda c, x: fut], timers, deadline=5.0)
    for obj in timers.expire(5.2):
        obj.on_timeout()
    assert conn.errors == [(503, "queue_timeout")] and ctx.error_type == "pipeline_timeout"
    loop.run_until_complete(asyncio.sleep(0))
    assert fut.cancelled() and handled == [] and len(conn.errors) == 1


def test_a_client_leaving_during_a_wait_cancels_it(loop):
    fut = loop.create_future()
    timers = TimerWheel(0.1)
    conn, ctx, handled = run([lambda c, x: fut], timers)
    conn.producer.abort()
    loop.run_until_complete(asyncio.sleep(0))
    assert fut.cancelled() and handled == [] and conn.errors == [] and len(timers) == 0
    conn.producer.on_timeout()  # a late deadline does nothing
    assert conn.errors == []


def test_a_failing_awaitable_answers_500(loop):
    fut = loop.create_future()
    conn, _, handled = run([lambda c, x: fut], TimerWheel(0.1))
    fut.set_exception(RuntimeError("jwks down"))
    loop.run_until_complete(asyncio.sleep(0))
    assert conn.errors == [(500, None)] and handled == []
