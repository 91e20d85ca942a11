"""The request filter chain: ordered stages between a parsed request and its handler.

A filter is a callable ``f(conn, ctx)`` returning a verdict:

- ``CONTINUE`` (None): go on with the next filter, then the route's handler;
- ``STOP``: the filter answered the client itself, or handed the request on;
- a ``Reply``: answer now with this error, in the request's API format;
- an awaitable (a token-bucket queue, a JWKS fetch, a storage read ...): the request
  waits, and resumes with the awaitable's result taken as the verdict.

Rules:
- Filters run in the order of the chain: request id (at the head, before the body) →
  auth → tenant → rate limit → admission → validation → selection; a route's chain
  holds only the stages that apply to it (gateway-owned routes skip validation and
  selection). Later issues add their stage at its place in ``Chains``.
- A waiting request has a deadline on the gateway's timer wheel (``--request-timeout-
  secs`` from its head); on expiry the awaitable is cancelled and the client answered
  503. A client that leaves while its request waits cancels the awaitable (the waiter
  is the connection's producer, like an exchange). Either way the chain ends once.
- Filters never write to the client except through the connection's sink methods.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("smg.filters")

CONTINUE = None


class _Stop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()


class Reply:
    """An error answer decided by a filter (status, message, SMG's error code)."""

    __slots__ = ("status", "message", "code", "headers", "param")

    def __init__(self, status: int, message: str, code: str | None = None, headers: list | None = None,
                 param: str | None = None) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers
        self.param = param

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.message!r}, {self.code!r})"


def run(chain: tuple, handler, conn, ctx, start: int, timers, deadline: float) -> None:
    """Runs ``chain[start:]`` then ``handler(conn, ctx)``, unless a filter ends it.
    A wait is bounded by ``deadline`` (the loop clock) on ``timers``."""
    n = len(chain)
    i = start
    while i < n:
        v = chain[i](conn, ctx)
        i += 1
        if v is None:
            continue
        if v is STOP:
            return
        if type(v) is Reply:
            _answer(conn, v)
            return
        Waiter(chain, handler, conn, ctx, i, v, timers, deadline).start()
        return
    handler(conn, ctx)


def _answer(conn, v: Reply) -> None:
    """Answers the client with the error ``v`` (a ``param`` only when it names one)."""
    if v.param is None:
        conn.reply_error(v.status, v.message, code=v.code, extra=v.headers)
    else:
        conn.reply_error(v.status, v.message, code=v.code, extra=v.headers, param=v.param)


class Waiter:
    """A request parked on a filter's awaitable; the connection's producer meanwhile."""

    __slots__ = ("chain", "handler", "conn", "ctx", "next", "future", "timers", "deadline", "timer_key", "done")

    def __init__(self, chain, handler, conn, ctx, nxt: int, awaitable, timers, deadline: float) -> None:
        self.chain = chain
        self.handler = handler
        self.conn = conn
        self.ctx = ctx
        self.next = nxt
        self.future = asyncio.ensure_future(awaitable)
        self.timers = timers
        self.deadline = deadline
        self.timer_key = 0
        self.done = False

    def start(self) -> None:
        self.conn.set_producer(self)
        if self.timers is not None:
            self.timer_key = self.timers.add(self, self.deadline)
        self.future.add_done_callback(self._resume)

    def _end(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self.timers is not None:
            self.timers.remove(self, self.timer_key)
        return True

    def _resume(self, fut) -> None:
        if fut.cancelled() or not self._end():
            return
        self.conn.set_producer(None)
        exc = fut.exception()
        if exc is not None:
            log.error("request %s: a filter failed: %r", self.ctx.rid.decode(), exc)
            self.conn.reply_error(500, "internal gateway error")
            return
        try:
            v = fut.result()
            if v is None:
                run(self.chain, self.handler, self.conn, self.ctx, self.next, self.timers, self.deadline)
            elif type(v) is Reply:
                _answer(self.conn, v)
            elif v is not STOP:
                # another wait: chain on
                Waiter(self.chain, self.handler, self.conn, self.ctx, self.next, v, self.timers,
                       self.deadline).start()
        except Exception:
            log.exception("request %s: the pipeline failed after a wait", self.ctx.rid.decode())
            self.conn.handler_failed()

    # -- the connection's producer interface -------------------------------------------

    def on_timeout(self) -> None:
        if self._end():
            self.future.cancel()
            self.conn.set_producer(None)
            self.ctx.error_type = "pipeline_timeout"
            self.conn.reply_error(503, "the request timed out waiting in the gateway", code="queue_timeout")

    def abort(self) -> None:
        if self._end():
            self.ctx.error_type = "client_disconnected"
            self.future.cancel()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass
