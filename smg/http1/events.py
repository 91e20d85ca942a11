"""Events produced by the HTTP/1.1 parsers; both twins build these same classes.

Header names are lower-cased bytes, values bytes with surrounding whitespace removed,
in the order received (a repeated identical Content-Length is kept once, as h11 does).
"""
from __future__ import annotations


class _Event:
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"{type(self).__name__}({fields})"

    __hash__ = None  # type: ignore[assignment]


class Request(_Event):
    """A request head.

    ``content_length`` is the body length, 0 when there is no body, -1 when chunked.
    ``keep_alive`` is False for HTTP/1.0 or ``Connection: close``.
    ``expect_continue`` is True for an HTTP/1.1 ``Expect: 100-continue``.
    """

    __slots__ = ("method", "target", "http_version", "headers", "content_length", "chunked",
                 "keep_alive", "expect_continue")

    def __init__(self, method: bytes, target: bytes, http_version: bytes, headers: list,
                 content_length: int, chunked: bool, keep_alive: bool, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue


class InformationalResponse(_Event):
    """A 1xx response head (other than 101) read before the final response."""

    __slots__ = ("status_code", "reason", "http_version", "headers")

    def __init__(self, status_code: int, reason: bytes, http_version: bytes, headers: list) -> None:
        self.status_code = status_code
        self.reason = reason
        self.http_version = http_version
        self.headers = headers


class Response(_Event):
    """A final response head.

    ``content_length``: body length; 0 when the response has no body (HEAD, 204, 304);
    -1 when chunked or delimited by connection close (``chunked`` tells which).
    """

    __slots__ = ("status_code", "reason", "http_version", "headers", "content_length", "chunked",
                 "keep_alive")

    def __init__(self, status_code: int, reason: bytes, http_version: bytes, headers: list,
                 content_length: int, chunked: bool, keep_alive: bool) -> None:
        self.status_code = status_code
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive


class Data(_Event):
    """A piece of message body, de-chunked. Never empty."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EndOfMessage(_Event):
    """The body ended; ``headers`` holds chunked trailers (usually empty)."""

    __slots__ = ("headers",)

    def __init__(self, headers: list | None = None) -> None:
        self.headers = headers if headers is not None else []
