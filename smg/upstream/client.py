"""The control-plane HTTP/1.1 client: every call smg makes that is not a proxied
request (worker model discovery, health and load probes, the Kubernetes API).

Two shapes over one connection machinery:

- ``request(url, method, path, ...)`` -> ``(status, headers, body)``: one request, the
  whole response buffered (at most ``limit`` bytes).
- ``stream(url, method, path, ...)`` -> ``Stream``: the response head is read, the
  body is consumed piece by piece (``next_data``), whole (``read``) or as
  newline-delimited lines (``lines``, a Kubernetes watch).

``url`` names the origin (``http://host:port`` or ``https://host:port``); its path is
not used, ``path`` is the request target. ``https://`` URLs use ``ssl`` (an
``ssl.SSLContext``; ``tls_context`` builds one from CA/client-certificate material),
else a default verifying context. ``bearer`` adds ``Authorization: Bearer <token>``.

Rules:
1. One request per connection (``connection: close``); nothing is pooled. This is
   not the request hot path (that is smg/upstream/pool.py).
2. Responses are parsed by smg's own HTTP/1.1 ResponseParser (smg.http1.parser).
3. Every wait is bounded: ``timeout`` bounds connect + TLS handshake + response head
   (``request``: the whole exchange), ``idle`` bounds each wait for more body.
   Every failure (connect, TLS, timeout, malformed or oversized response, early
   close) is an ``UpstreamError`` subclass (smg/errors.py: ``ConnectFailed``,
   ``UpstreamTimeout`` with ``status_hint`` 504, ``UpstreamProtocolError``,
   ``UpstreamClosed``); callers dispatch on the type, never the text.
4. A stream reads at most ``HIGH_WATER`` bytes ahead of its consumer: reading pauses
   until the consumer catches up.
"""
from __future__ import annotations

import asyncio
import collections
import os
import ssl as _ssl
import tempfile
from urllib.parse import urlsplit

import orjson

from smg.errors import (ConnectFailed, RemoteProtocolError, UpstreamClosed, UpstreamError, UpstreamProtocolError,
                        UpstreamTimeout)
from smg.http1.events import Data, EndOfMessage, Response
from smg.http1.parser import ResponseParser

__all__ = ["MAX_CONTROL_RESPONSE", "MAX_LINE", "Stream", "get_json", "request", "stream", "tls_context"]

MAX_CONTROL_RESPONSE = 16 * 1024 * 1024  # request(): the largest body buffered
MAX_LINE = 16 * 1024 * 1024              # Stream.lines(): the longest line
MAX_HEAD = 65536
HIGH_WATER = 1024 * 1024                 # unread body bytes at which reading pauses
LOW_WATER = 256 * 1024                   # ... and resumes


def tls_context(*, ca_file: str | None = None, ca_data: str | bytes | None = None,
                cert_file: str | None = None, key_file: str | None = None,
                cert_data: bytes | None = None, key_data: bytes | None = None,
                insecure: bool = False) -> _ssl.SSLContext:
    """A client TLS context.

    ``ca_file``/``ca_data`` (PEM), when given, are the only trusted roots (as in
    client-go); without them the system store is. ``cert_*``/``key_*`` (PEM, as files
    or bytes) are the client certificate. ``insecure`` skips verification (kubeconfig's
    ``insecure-skip-tls-verify``).

    Raises:
        ssl.SSLError, OSError: unreadable or invalid material.
    """
    if isinstance(ca_data, bytes):
        ca_data = ca_data.decode("ascii")
    ctx = _ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    elif cert_data and key_data:
        # load_cert_chain only takes paths: both go to a private temp dir, briefly.
        with tempfile.TemporaryDirectory(prefix="smg-tls-") as d:
            cp, kp = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            for p, data in ((cp, cert_data), (kp, key_data)):
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cp, kp)
    return ctx


class _Reader(asyncio.Protocol):
    """One connection: bytes go through the parser, events queue for the consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = ResponseParser(MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.events: collections.deque = collections.deque()
        self.buffered = 0          # bytes of queued Data events
        self.paused = False
        self.closed = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            self._fail(UpstreamProtocolError(f"malformed response: {e}"))
            self.transport.close()
            return
        self._push(events)

    def eof_received(self):
        try:
            self._push(self.parser.feed_eof())
        except RemoteProtocolError as e:
            self._fail(UpstreamProtocolError(f"malformed response: {e}"))
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._wake()

    def _push(self, events: list) -> None:
        for ev in events:
            if type(ev) is Data:
                self.buffered += len(ev.data)
            self.events.append(ev)
        if self.buffered > HIGH_WATER and not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    async def next_event(self, timeout: float | None):
        """The next parser event. Raises TimeoutError (raw) or UpstreamError."""
        while not self.events:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamClosed("connection closed before the response ended")
            self.waiter = self.loop.create_future()
            if timeout is None:
                await self.waiter
            else:
                async with asyncio.timeout(timeout):
                    await self.waiter
        ev = self.events.popleft()
        if type(ev) is Data:
            self.buffered -= len(ev.data)
            if self.paused and self.buffered <= LOW_WATER and not self.closed:
                self.paused = False
                self.transport.resume_reading()
        return ev


class Stream:
    """An open response whose head has been read.

    Attributes:
        status: the HTTP status. headers: [(name, value)] as bytes, names lower-cased.
    """

    def __init__(self, reader: _Reader, status: int, headers: list, what: str) -> None:
        self._reader = reader
        self.status = status
        self.headers = headers
        self.what = what           # "GET https://host:port/path", for messages
        self.ended = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes), or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    async def _next(self, idle: float | None) -> bytes | None:
        while not self.ended:
            ev = await self._reader.next_event(idle)
            if type(ev) is Data:
                return ev.data
            if type(ev) is EndOfMessage:
                self.ended = True
        return None

    async def _read(self, limit: int, idle: float | None) -> bytes:
        parts, size = [], 0
        while (piece := await self._next(idle)) is not None:
            size += len(piece)
            if size > limit:
                raise UpstreamError(f"{self.what}: response larger than {limit} bytes")
            parts.append(piece)
        return b"".join(parts)

    def _timed_out(self, idle) -> UpstreamError:
        return UpstreamTimeout(f"{self.what}: no data within {idle:g} s")

    async def next_data(self, idle: float | None = None) -> bytes | None:
        """The next body piece, or None at the end of the body.

        Raises:
            UpstreamError: nothing arrived within ``idle`` seconds, early close, bad bytes.
        """
        try:
            return await self._next(idle)
        except TimeoutError:
            raise self._timed_out(idle) from None

    async def read(self, limit: int = MAX_CONTROL_RESPONSE, idle: float | None = None) -> bytes:
        """The rest of the body (at most ``limit`` bytes; ``idle`` bounds each wait).

        Raises:
            UpstreamError: too large, idle timeout, early close, bad bytes.
        """
        try:
            return await self._read(limit, idle)
        except TimeoutError:
            raise self._timed_out(idle) from None

    async def lines(self, idle: float | None = None, limit: int = MAX_LINE):
        """Yields the body's non-blank lines without their ``\\n`` (a final line
        without one too).

        Raises:
            UpstreamError: a line longer than ``limit``, idle timeout, early close.
        """
        buf = bytearray()
        while True:
            try:
                piece = await self._next(idle)
            except TimeoutError:
                raise self._timed_out(idle) from None
            if piece is None:
                break
            scan = len(buf)
            buf += piece
            start = 0
            while (i := buf.find(b"\n", scan)) >= 0:
                line = bytes(buf[start:i])
                start = scan = i + 1
                if line.strip():
                    yield line
            if start:
                del buf[:start]
            if len(buf) > limit:
                raise UpstreamError(f"{self.what}: a line longer than {limit} bytes")
        if buf.strip():
            yield bytes(buf)

    def close(self) -> None:
        """Closes the connection (at once; an unread body is dropped)."""
        t = self._reader.transport
        if t is not None:
            t.close()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


def _head(method: str, netloc: str, path: str, body: bytes | None, headers, bearer: str | None) -> bytes:
    out = [f"{method} {path} HTTP/1.1\r\nhost: {netloc}\r\nconnection: close\r\n".encode()]
    for n, v in headers or ():
        out.append(f"{n}: {v}\r\n".encode())
    if bearer:
        out.append(f"authorization: Bearer {bearer}\r\n".encode())
    if body is not None:
        out.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
    out.append(b"\r\n")
    return b"".join(out)


async def _open(url: str, method: str, path: str, body: bytes | None, headers, *, ssl, bearer,
                connect_timeout: float | None) -> Stream:
    """Connects, sends, reads the head. Raises TimeoutError (raw), OSError or UpstreamError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"{url!r} is not an http:// or https:// URL")
    tls = None
    if parts.scheme == "https":
        tls = ssl if ssl is not None else _ssl.create_default_context()
    loop = asyncio.get_running_loop()
    reader = _Reader(loop)
    connect = loop.create_connection(lambda: reader, parts.hostname, parts.port or (443 if tls else 80),
                                     ssl=tls, server_hostname=parts.hostname if tls else None)
    if connect_timeout is None:
        await connect
    else:
        async with asyncio.timeout(connect_timeout):
            await connect
    what = f"{method} {parts.scheme}://{parts.netloc}{path}"
    try:
        if method == "HEAD":
            reader.parser.set_request_method(b"HEAD")
        reader.transport.write(_head(method, parts.netloc, path, body, headers, bearer) + (body or b""))
        while True:
            ev = await reader.next_event(None)
            if type(ev) is Response:
                return Stream(reader, ev.status_code, ev.headers, what)
    except BaseException:
        reader.transport.close()
        raise


def _failed(method: str, url: str, path: str, e: OSError) -> UpstreamError:
    return ConnectFailed(f"{method} {url}{path}: {e.strerror or e}")


async def stream(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
                 headers: list | None = None, timeout: float = 30.0, *, ssl: _ssl.SSLContext | None = None,
                 bearer: str | None = None, connect_timeout: float | None = None) -> Stream:
    """Sends one request and returns once the response head is in; the caller reads
    the body and must ``close()`` the stream (or use ``async with``).

    ``timeout`` bounds connect + TLS handshake + head, ``connect_timeout`` (if
    shorter) the connect + handshake alone.

    Raises:
        UpstreamError: connect/TLS failure, timeout, malformed response.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _open(url, method, path, body, headers, ssl=ssl, bearer=bearer,
                               connect_timeout=connect_timeout)
    except TimeoutError:
        raise UpstreamTimeout(f"{method} {url}{path} timed out") from None
    except OSError as e:
        raise _failed(method, url, path, e) from None


async def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
                  headers: list | None = None, timeout: float = 5.0, *, ssl: _ssl.SSLContext | None = None,
                  bearer: str | None = None, limit: int = MAX_CONTROL_RESPONSE) -> tuple:
    """Sends one request to ``url`` + ``path``; ``timeout`` bounds the whole exchange.

    Returns:
        (status, headers, body bytes).
    Raises:
        UpstreamError: connection failure, malformed or too large response, timeout.
    """
    try:
        async with asyncio.timeout(timeout):
            s = await _open(url, method, path, body, headers, ssl=ssl, bearer=bearer, connect_timeout=None)
            try:
                return s.status, s.headers, await s._read(limit, None)
            finally:
                s.close()
    except TimeoutError:
        raise UpstreamTimeout(f"{method} {url}{path} timed out") from None
    except OSError as e:
        raise _failed(method, url, path, e) from None


async def get_json(url: str, path: str, timeout: float = 5.0, **kw):
    """GET returning parsed JSON; raises UpstreamError on non-2xx or bad JSON.
    ``kw``: ``ssl``, ``bearer``, ``limit`` as for ``request``."""
    status, _, body = await request(url, "GET", path, timeout=timeout, **kw)
    if not 200 <= status < 300:
        raise UpstreamError(f"GET {url}{path} answered {status}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"GET {url}{path} did not return JSON") from None
