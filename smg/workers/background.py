"""Background: ``start()``/``stop()`` for a class whose ``run()`` coroutine loops until
cancelled (the health checker, load monitor and discovery sources)."""
from __future__ import annotations

import asyncio


class Background:
    _task: asyncio.Task | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> asyncio.Task:
        """Starts ``run()`` as a task (once; a running task is returned as is)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())
        return self._task

    async def stop(self) -> None:
        """Cancels the task and waits for it to end."""
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
