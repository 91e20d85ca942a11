"""Failure injection: deciding whether a request fails, and carrying the failure out.

Rules (the modes are described in ``config.py``):
- Only inference endpoints call in here; each call to ``choose`` is one draw against
  ``fail_rate`` and every failure chosen is counted in ``stats.failures``.
- "reset" sets ``SO_LINGER`` to zero before aborting, so the client sees an RST, not
  a FIN.
- "cut" truncates the very answer the request would have had: a stream template stops
  after ``cut_after_chunks`` events, a non-streaming body after half its bytes.
- "hang" takes the connection (``begin``) and never gives it back; the client leaving
  or ``MockWorker.stop`` ends it.
"""
from __future__ import annotations

import asyncio
import random
import socket
import struct
from typing import Any

from smg.testing.mock_worker.streaming import stream_task
from smg.testing.mock_worker.wire import END_OF_HEAD


def choose(conn: Any) -> str | None:
    """The failure mode this request gets, or None to answer normally."""
    cfg = conn.w.config
    mode = cfg.fail_mode
    if mode is None:
        if cfg.fail_status is None:
            return None
        mode = "status"
    if cfg.fail_rate < 1.0 and random.random() >= cfg.fail_rate:
        return None
    conn.w.stats.failures += 1
    return mode


def inflict(conn: Any, mode: str, anthropic: bool, tmpl: tuple) -> None:
    """Carries out failure ``mode``; ``tmpl`` is the answer a cut truncates."""
    cfg = conn.w.config
    if mode == "status":
        status = cfg.fail_status or 500
        conn.error(status, f"mock worker injected failure (status {status})", anthropic)
    elif mode == "reset":
        set_rst(conn.transport)
        conn.transport.abort()
    elif mode == "hang":
        conn.begin(False)
    elif mode == "cut":
        if len(tmpl) == 3:
            conn.begin(True)
            conn.task = asyncio.get_running_loop().create_task(
                stream_task(conn, tmpl, conn.w._next_id(), conn.extra, cfg.cut_after_chunks))
        else:  # non-streaming: half the body, then abort
            head, parts = tmpl
            full = conn.w._next_id().join(parts)
            conn.transport.write(b"".join((head, conn.extra, END_OF_HEAD, full[:len(full) // 2])))
            conn.transport.abort()


def set_rst(transport: asyncio.BaseTransport) -> None:
    """Makes the coming close send an RST (SO_LINGER with a zero timeout)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - platform without SO_LINGER
            pass
