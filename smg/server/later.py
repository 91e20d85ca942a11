"""A gateway-owned handler that must wait (a storage read): the answer comes from a
coroutine.

``answer_later(conn, ctx, coro, deadline_secs)`` runs ``coro`` as a task and is the
connection's producer meanwhile. Rules:
- The coroutine returns ``(status, body_bytes)`` (a JSON answer) or a ``Reply`` (an
  error in the route's format); either is sent once, through the sink.
- A client that leaves cancels the task; a coroutine that raises is answered 500 and
  logged; one that outlasts ``deadline_secs`` is cancelled and answered 503
  ``storage_unavailable`` (the only thing these handlers wait on is storage).
"""
from __future__ import annotations

import asyncio
import logging

from smg.server.filters import Reply

log = logging.getLogger("smg.later")


class Later:
    __slots__ = ("conn", "ctx", "task", "done")

    def __init__(self, conn, ctx) -> None:
        self.conn = conn
        self.ctx = ctx
        self.task = None
        self.done = False

    def start(self, coro, deadline_secs: float) -> None:
        self.conn.set_producer(self)
        self.task = asyncio.get_running_loop().create_task(self._run(coro, deadline_secs))

    async def _run(self, coro, deadline_secs: float) -> None:
        try:
            async with asyncio.timeout(deadline_secs):
                result = await coro
        except asyncio.CancelledError:
            return
        except TimeoutError:
            result = Reply(503, "the history storage did not answer in time", "storage_unavailable")
        except Exception:
            log.exception("request %s: handler failed", self.ctx.rid.decode())
            result = Reply(500, "internal gateway error", "internal_error")
        if self.done:
            return
        self.done = True
        conn = self.conn
        conn.set_producer(None)
        if type(result) is Reply:
            conn.reply_error(result.status, result.message, code=result.code, param=result.param)
        else:
            conn.reply(result[0], result[1])

    # -- the producer interface ----------------------------------------------------------

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.ctx.error_type = "client_disconnected"
            if self.task is not None:
                self.task.cancel()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def answer_later(conn, ctx, coro, deadline_secs: float) -> None:
    Later(conn, ctx).start(coro, deadline_secs)
