"""A recording mock worker: every request it receives is kept for the test to read back.

The conformance suite (tests/conformance/) puts two gateways in front of the same
workers and compares what reached them; this worker is how it sees that. It answers
exactly as the mock worker (``smg.testing.mock_worker``) does, same shapes and same
streams, and in addition records each request it is sent.

Rules:
- Every request is recorded before it is answered, in arrival order, with a sequence
  number that only grows (``seq``, from 1): method, target (path and query), headers
  as received (lower-case names, values decoded as latin-1, duplicates and order
  kept) and the body (decoded as UTF-8, invalid bytes replaced).
- ``/_received`` is the side door, never recorded: ``GET /_received?after=N`` answers
  ``{"records": [...], "last": M}`` with the records whose ``seq`` is above ``N``
  (all of them without ``after``) and ``M`` the last ``seq`` given so far;
  ``DELETE /_received`` forgets them all (``seq`` keeps counting). ``/_mock/*`` (the
  mock's own admin surface) is not recorded either.
- At most ``MAX_RECORDS`` records are kept, the oldest dropped first, so a long run
  cannot grow without bound; a reader asking ``after`` a dropped one just gets fewer.
- Run it with ``python -m smg.testing.echo_worker --port N [--model M]``; it prints one
  ``listening on <url>`` line once it accepts, and exits 0 on SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import click
import orjson

from smg.http1.events import Request
from smg.testing.mock_worker.config import MockConfig
from smg.testing.mock_worker.protocol import MockProtocol
from smg.testing.mock_worker.server import MockWorker

MAX_RECORDS = 10_000  # a conformance session sends a few hundred requests; this is ample
RECEIVED_PATH = b"/_received"


def _after(target: bytes) -> int:
    """The ``after=N`` of a ``/_received`` query string (0 when absent or not a number)."""
    q = target.find(b"?")
    if q < 0:
        return 0
    for part in target[q + 1:].split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"after":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class EchoProtocol(MockProtocol):
    """``MockProtocol`` that records each request first and answers ``/_received``."""

    __slots__ = ()

    def handle(self, req: Request, body: bytes) -> None:
        target = req.target
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        if path == RECEIVED_PATH:
            self.received(req)
            return
        if not path.startswith(b"/_mock/"):
            self.w.record(req, body)
        super().handle(req, body)

    def received(self, req: Request) -> None:
        # the fields ``handle`` sets before a handler runs (see protocol.py)
        self.rid = None
        self.keep = req.keep_alive
        self.extra = b""
        w = self.w
        if req.method == b"GET":
            after = _after(req.target)
            self.json({"records": [r for r in w.records if r["seq"] > after], "last": w.seq})
        elif req.method == b"DELETE":
            w.records.clear()
            self.json({"cleared": True, "last": w.seq})
        else:
            self.respond(405, orjson.dumps({"error": {"message": "use GET or DELETE", "code": 405}}),
                         [(b"allow", b"DELETE, GET")])


class EchoWorker(MockWorker):
    """A ``MockWorker`` whose requests can be read back: ``records`` (oldest first), ``seq``.

    Usage::

        w = await EchoWorker(MockConfig(model="echo-model")).start()
        ... requests ...; w.records[-1]["headers"] ...
        await w.stop()
    """

    def __init__(self, config: MockConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.records: deque = deque(maxlen=MAX_RECORDS)
        self.seq = 0

    def record(self, req: Request, body: bytes) -> None:
        self.seq += 1
        self.records.append({
            "seq": self.seq,
            "method": req.method.decode("latin-1"),
            "target": req.target.decode("latin-1"),
            "headers": [[n.decode("latin-1").lower(), v.decode("latin-1")] for n, v in req.headers],
            "body": body.decode("utf-8", "replace"),
        })

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl=None) -> EchoWorker:
        """Listens on ``host:port`` (0 = a free port); returns once accepting."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: EchoProtocol(self), host, port, backlog=1024, ssl=ssl)
        self.tls = ssl is not None
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        if not self._config.worker_id:
            self._config.worker_id = f"echo-{self.port}"
        self._reset_templates()
        return self


@click.command("echo-worker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0 = any free port).")
@click.option("--model", default="echo-model", show_default=True)
@click.option("--worker-id", default="", help="x-mock-worker value [default: echo-<port>].")
@click.option("--num-chunks", default=8, show_default=True, type=int, help="Tokens per answer.")
def echo_worker_command(host: str, port: int, model: str, worker_id: str, num_chunks: int) -> None:
    """Run one recording mock worker until interrupted."""
    try:
        cfg = MockConfig()
        cfg.update({"model": model, "worker_id": worker_id, "num_chunks": num_chunks})
    except ValueError as e:
        raise click.BadParameter(str(e)) from None

    async def main() -> None:
        import signal
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the line: whoever read it may stop us at once
            loop.add_signal_handler(sig, stop.set)
        worker = await EchoWorker(cfg).start(host, port)
        print(f"echo worker {cfg.worker_id} ({cfg.model}) listening on {worker.url}", flush=True)
        await stop.wait()
        await worker.stop()

    import uvloop
    uvloop.run(main())


if __name__ == "__main__":
    echo_worker_command()
