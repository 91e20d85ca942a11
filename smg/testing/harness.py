"""A gateway and mock workers on a uvloop loop in a background thread.

Lets synchronous clients (the openai/anthropic SDKs, curl, raw sockets) drive a real
gateway over 127.0.0.1 from a test. Everything is bounded by timeouts.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvloop

from smg.config.load import build_config
from smg.server.app import Gateway
from smg.testing.mock_worker import MockConfig, MockWorker


class LoopThread:
    """A uvloop event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="smg-test-loop", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 30.0) -> Any:
        """Runs ``coro`` on the loop and returns its result (bounded by ``timeout``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args) -> Any:
        async def _call():
            return fn(*args)
        return self.run(_call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class GatewayHarness:
    """``GatewayHarness(workers=[MockConfig(...), ...], policy="round_robin", ...)``.

    Keyword arguments other than ``workers``/``extra_worker_urls`` are gateway settings.
    """

    def __init__(self, workers: list | None = None, extra_worker_urls: tuple = (),
                 wait_ready: bool = True, access_log=None, tracing=None, **settings: Any) -> None:
        self.access_log = access_log
        self.tracing = tracing
        self.worker_configs = workers if workers is not None else [MockConfig(worker_id="w1"),
                                                                   MockConfig(worker_id="w2")]
        self.extra_worker_urls = list(extra_worker_urls)
        self.settings = settings
        self.wait = wait_ready
        self.lt: LoopThread | None = None
        self.workers: list = []
        self.gw: Gateway | None = None

    def __enter__(self) -> "GatewayHarness":
        self.lt = LoopThread()
        try:
            self.lt.run(self._start())
        except BaseException:
            self.lt.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.lt.run(self._stop())
        finally:
            self.lt.stop()

    async def _start(self) -> None:
        for c in self.worker_configs:
            self.workers.append(await MockWorker(c).start("127.0.0.1", 0))
        # tests name their policy; the default here is round_robin so that spreading is predictable
        values = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "prometheus_host": "127.0.0.1",
                  "policy": "round_robin",
                  "prometheus_port": 0,
                  "worker_urls": [w.url for w in self.workers] + self.extra_worker_urls}
        values.update(self.settings)
        self.gw = Gateway(build_config(values), access_log=self.access_log, tracing=self.tracing)
        await self.gw.start()
        if self.wait and self.workers:
            await self.gw.wait_ready(10)

    async def _stop(self) -> None:
        await self.gw.shutdown(0.5)
        for w in self.workers:
            await w.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.gw.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.gw.port}"

    @property
    def port(self) -> int:
        return self.gw.port

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.gw.metrics_port}/metrics"

    def run(self, coro, timeout: float = 30.0) -> Any:
        return self.lt.run(coro, timeout)

    def on_loop(self, fn, *args) -> Any:
        """Calls ``fn(*args)`` on the gateway's loop thread (for state that is not thread-safe)."""
        return self.lt.call(fn, *args)


class PdHarness(GatewayHarness):
    """A gateway in prefill-decode mode in front of ``prefills`` ``PrefillWorker`` and
    ``decodes`` ``DecodeWorker`` mocks (smg/testing/pd_workers.py), given to it as
    ``--prefill URL PORT`` and ``--decode URL``. ``prefill_kw``/``decode_kw``: the
    mocks' keyword arguments; ``workers``: regular mocks next to them; ``vllm``: vLLM's
    handoff mocks (``VllmPrefillWorker``/``VllmDecodeWorker``) instead."""

    def __init__(self, prefills: int = 1, decodes: int = 1, prefill_kw: dict | None = None,
                 decode_kw: dict | None = None, workers: list | None = None, vllm: bool = False,
                 **settings: Any) -> None:
        super().__init__(workers=workers or [], **settings)
        self.vllm = vllm
        self.n_prefill, self.n_decode = prefills, decodes
        self.prefill_kw, self.decode_kw = prefill_kw or {}, decode_kw or {}
        self.prefills: list = []
        self.decodes: list = []

    async def _start(self) -> None:
        from smg.testing import pd_workers as pw

        pcls, dcls = (pw.VllmPrefillWorker, pw.VllmDecodeWorker) if self.vllm else (pw.PrefillWorker, pw.DecodeWorker)
        owner = "vllm" if self.vllm else "sglang"
        for i in range(self.n_prefill):
            cfg = MockConfig(worker_id=f"p{i + 1}", owned_by=owner)
            self.prefills.append(await pcls(cfg, **self.prefill_kw).start())
        for i in range(self.n_decode):
            cfg = MockConfig(worker_id=f"d{i + 1}", owned_by=owner)
            self.decodes.append(await dcls(cfg, **self.decode_kw).start())
        self.settings = dict(self.settings, pd_disaggregation=True,
                             prefill=[x for p in self.prefills for x in (p.url, str(p.bootstrap_port))],
                             decode=[d.url for d in self.decodes])
        wait = self.wait
        self.wait = False
        await super()._start()
        self.wait = wait
        if wait:
            await self.gw.wait_ready(10)

    async def _stop(self) -> None:
        await super()._stop()
        for w in self.prefills + self.decodes:
            await w.stop()
