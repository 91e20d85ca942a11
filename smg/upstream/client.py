"""A small HTTP/1.1 client for control-plane calls to workers (model discovery,
health probes): one request per connection, whole response buffered.

Not for the request hot path (that is smg/upstream/pool.py).
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson

from smg.errors import RemoteProtocolError, UpstreamError
from smg.http1.events import Data, EndOfMessage, Response
from smg.http1.parser import ResponseParser

MAX_CONTROL_RESPONSE = 16 * 1024 * 1024


class _OneShot(asyncio.Protocol):
    def __init__(self, done: asyncio.Future) -> None:
        self.done = done
        self.parser = ResponseParser(65536)
        self.status = 0
        self.headers: list = []
        self.body: list = []
        self.size = 0

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            self._fail(UpstreamError(f"malformed response: {e}"))
            return
        self._handle(events)

    def _handle(self, events: list) -> None:
        for ev in events:
            if type(ev) is Response:
                self.status = ev.status_code
                self.headers = ev.headers
            elif type(ev) is Data:
                self.size += len(ev.data)
                if self.size > MAX_CONTROL_RESPONSE:
                    self._fail(UpstreamError("control response too large"))
                    return
                self.body.append(ev.data)
            elif type(ev) is EndOfMessage:
                if not self.done.done():
                    self.done.set_result((self.status, self.headers, b"".join(self.body)))

    def eof_received(self):
        try:
            self._handle(self.parser.feed_eof())
        except RemoteProtocolError as e:
            self._fail(UpstreamError(str(e)))
        return False

    def connection_lost(self, exc) -> None:
        self._fail(UpstreamError("connection closed before the response ended"))

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
                  headers: list | None = None, timeout: float = 5.0) -> tuple:
    """Sends one request to ``url`` + ``path``.

    Returns:
        (status, headers, body bytes).
    Raises:
        UpstreamError: connection failure, malformed response or timeout.
    """
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_connection(
                lambda: _OneShot(done), parts.hostname, parts.port or 80)
            if method == "HEAD":
                proto.parser.set_request_method(b"HEAD")
            head = [f"{method} {path} HTTP/1.1\r\nhost: {parts.netloc}\r\nconnection: close\r\n".encode()]
            for n, v in headers or ():
                head.append(f"{n}: {v}\r\n".encode())
            if body is not None:
                head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
            head.append(b"\r\n")
            transport.write(b"".join(head) + (body or b""))
            return await done
    except TimeoutError:
        raise UpstreamError(f"{method} {url}{path} timed out", 504) from None
    except OSError as e:
        raise UpstreamError(f"{method} {url}{path}: {e.strerror or e}") from None
    finally:
        if transport is not None:
            transport.close()


async def get_json(url: str, path: str, timeout: float = 5.0):
    """GET returning parsed JSON; raises UpstreamError on non-2xx or bad JSON."""
    status, _, body = await request(url, "GET", path, timeout=timeout)
    if not 200 <= status < 300:
        raise UpstreamError(f"GET {url}{path} answered {status}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"GET {url}{path} did not return JSON") from None
