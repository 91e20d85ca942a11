"""Answers that are not one inline write: streams (inline, batched or paced) and delayed answers.

Rules:
- With no delay configured and a writable transport, a stream leaves inline: in one
  write when it has at most ``STREAM_BATCH`` events, else in writes of that many events;
  the moment the transport pushes back (``pause_writing``), a task takes over from the
  next batch.
- With ``ttft`` or ``token_delay``, a task writes the head at once, waits ``ttft``
  before the first event, and ``token_delay`` before every content token but the first.
- A "cut" stream (``cut_after``) stops after that many events and aborts the
  connection; it is released, not finished (neither completed nor cancelled).
- A task checks ``conn.closed`` after every wait: a client that left is never written
  to, and ``connection_lost`` has already counted it.
- A non-streaming answer with a delay (``ttft + num_chunks * token_delay``) is written
  whole by ``delayed`` once the delay has passed.
- Every frame is ``id.join(frame)`` (``templates.py``); the end is ``LAST_CHUNK``.
"""
from __future__ import annotations

import asyncio
from typing import Any

from smg.http1.writer import LAST_CHUNK
from smg.testing.mock_worker.wire import END_OF_HEAD

STREAM_BATCH = 64  # SSE events per write on the zero-delay stream path


def start_stream(conn: Any, tmpl: tuple, idb: bytes) -> None:
    """Sends stream ``tmpl`` with id ``idb``, inline when it can."""
    cfg = conn.w.config
    if cfg.ttft or cfg.token_delay or conn.paused:
        conn.begin(True)
        conn.task = asyncio.get_running_loop().create_task(stream_task(conn, tmpl, idb, conn.extra, None))
        return
    head, frames, _ = tmpl
    t = conn.transport
    if len(frames) <= STREAM_BATCH:
        t.write(b"".join([head, conn.extra, END_OF_HEAD] + [idb.join(f) for f in frames] + [LAST_CHUNK]))
        conn.w.stats.completed_streams += 1
        conn.done()
        return
    # A long stream: write in batches and hand over to a task when the transport pushes back.
    t.write(head + conn.extra + END_OF_HEAD)
    for i in range(0, len(frames), STREAM_BATCH):
        t.write(b"".join([idb.join(f) for f in frames[i:i + STREAM_BATCH]]))
        if conn.paused and i + STREAM_BATCH < len(frames):
            conn.begin(True)
            conn.task = asyncio.get_running_loop().create_task(
                stream_task(conn, tmpl, idb, b"", None, start=i + STREAM_BATCH))
            return
    t.write(LAST_CHUNK)
    conn.w.stats.completed_streams += 1
    conn.done()


async def _wait_writable(conn: Any) -> None:
    if conn.paused and not conn.closed:
        conn.drain = asyncio.get_running_loop().create_future()
        await conn.drain
        conn.drain = None


async def stream_task(conn: Any, tmpl: tuple, idb: bytes, extra: bytes, cut_after: int | None,
                      start: int = 0) -> None:
    """Streams ``tmpl`` from event ``start`` with the configured delays; ``cut_after`` events then abort."""
    head, frames, kinds = tmpl
    cfg = conn.w.config
    t = conn.transport
    sleep = asyncio.sleep
    try:
        if start == 0:
            t.write(head + extra + END_OF_HEAD)
            if cfg.ttft:
                await sleep(cfg.ttft)
        seen_token = False
        for i in range(start, len(frames)):
            if conn.closed:
                return
            if cut_after is not None and i >= cut_after:
                conn.release()
                t.abort()
                return
            if kinds[i]:
                if seen_token and cfg.token_delay:
                    await sleep(cfg.token_delay)
                    if conn.closed:
                        return
                seen_token = True
            t.write(idb.join(frames[i]))
            if conn.paused:
                await _wait_writable(conn)
        if conn.closed:
            return
        if cut_after is not None:
            conn.release()
            t.abort()
            return
        t.write(LAST_CHUNK)
        conn.w.stats.completed_streams += 1
    except asyncio.CancelledError:
        return
    conn.finish()


async def delayed(conn: Any, tmpl: tuple, idb: bytes, extra: bytes, delay: float) -> None:
    """Sends non-streaming ``tmpl`` after ``delay`` seconds (unless the client left)."""
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError:
        return
    if conn.closed:
        return
    head, parts = tmpl
    conn.transport.write(b"".join((head, extra, END_OF_HEAD, idb.join(parts))))
    conn.finish()
