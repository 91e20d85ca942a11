"""Background responses (``background: true``): the create is answered at once with the
stored ``in_progress`` Response, and the turn's chat exchange runs on with no client,
writing to a ``Detached`` sink; the stored record is the only place its answer goes.

Rules:
- At most ``--max-background-responses`` run at once (0: background refused); one
  more is refused 429 ``too_many_background_responses``.
- The record is stored ``in_progress`` before the create is answered, and overwritten
  with the finished Response (completed, incomplete, or failed with the worker's or the
  gateway's error) when the turn ends: a client polls ``GET /v1/responses/{id}``.
- ``cancel`` of a running background response aborts its exchange (the worker's
  generation is aborted, as when a client leaves) and stores it ``cancelled``; a
  response that is not running answers 400 ``response_not_cancellable``.
- A background turn is not streamed (``stream`` with ``background`` is a 400).
- Memory: one ``Job`` per running background response, removed when it ends.
"""
from __future__ import annotations

import asyncio
import logging

import orjson

from smg.history import StorageUnavailable

log = logging.getLogger("smg.responses")


class Job:
    __slots__ = ("turn", "producer", "ended", "task")

    def __init__(self, turn) -> None:
        self.turn = turn
        self.producer = None   # the exchange (or the sink while it stores)
        self.ended = False
        self.task = None


class Background:
    """The running background responses (module rules)."""

    def __init__(self, store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.jobs: dict = {}   # response id -> Job

    def full(self) -> bool:
        return len(self.jobs) >= self.limit

    def add(self, turn) -> "Detached":
        job = self.jobs[turn.id] = Job(turn)
        return Detached(self, job)

    def end(self, job: Job, final: dict | None) -> None:
        """The job ended: ``final`` (when given) replaces its record."""
        if job.ended:
            return
        job.ended = True
        self.jobs.pop(job.turn.id, None)
        if final is not None:
            job.task = asyncio.get_running_loop().create_task(self._store(job.turn, final))

    async def _store(self, turn, final: dict) -> None:
        try:
            await turn.save(self.store, final)
        except StorageUnavailable as e:
            log.warning("background response %s: its final record was not stored: %s", turn.id, e)

    async def cancel(self, rid: str):
        """The cancelled Response of a running job, or None when ``rid`` is not running."""
        job = self.jobs.get(rid)
        if job is None:
            return None
        p = job.producer
        final = job.turn.response("cancelled", [])
        self.end(job, None)
        if p is not None:
            p.abort()
        await job.turn.save(self.store, final)
        return final


class Detached:
    """The sink a background turn's ``TurnSink`` writes to: nobody reads it; what ends
    the turn ends the job."""

    __slots__ = ("bg", "job", "status", "parts")

    def __init__(self, bg: Background, job: Job) -> None:
        self.bg = bg
        self.job = job
        self.status = 0
        self.parts: list = []

    def set_producer(self, producer) -> None:
        self.job.producer = producer

    def _failed(self, message: str, code: str = "server_error") -> None:
        self.bg.end(self.job, self.job.turn.response("failed", [], error={"code": code, "message": message}))

    def reply(self, status: int, body: bytes, headers=None, close: bool = False, content_type=None) -> None:
        # the TurnSink's finished answer: stored by the TurnSink already (store is true)
        self.bg.end(self.job, None)

    def reply_error(self, status: int, message: str, code: str | None = None, close: bool = False,
                    extra=None, param=None) -> None:
        self._failed(message, code or "server_error")

    def send_head(self, status: int, headers, length, skip, extra) -> None:
        self.status = status

    def send(self, pieces: list, end: bool) -> None:
        if self.status >= 300:
            self.parts += pieces
            if end:
                self._failed(_message(b"".join(self.parts), self.status))

    def fail(self, event) -> None:
        self._failed("the worker's answer was cut off")

    def handler_failed(self) -> None:
        self._failed("internal gateway error")


def _message(raw: bytes, status: int) -> str:
    try:
        err = orjson.loads(raw).get("error")
        if type(err) is dict and type(err.get("message")) is str:
            return err["message"]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"the worker answered {status}"
