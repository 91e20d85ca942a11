# Stub for the compiled smg._native.http1; the pure-Python twin smg/http1/parser_py.py
# has the same API (mypy checks the twin against this stub).

from smg.http1.events import (
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
)

DEFAULT_MAX_HEAD_SIZE: int
MAX_CHUNK_SIZE: int  # the largest chunk-size accepted (2**63 - 1)

# Parser states (RequestParser.state / ResponseParser.state).
H1_HEAD: int
H1_BODY_LENGTH: int
H1_CHUNK_SIZE: int
H1_CHUNK_DATA: int
H1_CHUNK_DATA_END: int
H1_TRAILERS: int
H1_BODY_UNTIL_CLOSE: int
H1_CLOSED: int
H1_ERROR: int

class RequestParser:
    """Parses the requests a client sends (pipelined requests come out in order)."""

    def __init__(self, max_head_size: int = ...) -> None: ...
    @property
    def state(self) -> int:
        """One of the H1_* integers."""
    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (e.g. an incomplete head)."""
    def feed(self, data: bytes | bytearray | memoryview) -> list[Request | Data | EndOfMessage]:
        """Events completed by these bytes.

        Raises RemoteProtocolError (400/431/501/505) and TypeError."""
    def feed_eof(self) -> list[EndOfMessage]:
        """The peer closed: [] between messages. Raises RemoteProtocolError(400) mid-message."""

class ResponseParser:
    """Parses the responses a worker sends back; every error it raises carries 502."""

    def __init__(self, max_head_size: int = ...) -> None: ...
    def set_request_method(self, method: bytes) -> None:
        """The method of the request the next response answers (HEAD: no body)."""
    @property
    def state(self) -> int:
        """One of the H1_* integers."""
    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (e.g. an incomplete head)."""
    def feed(
        self, data: bytes | bytearray | memoryview
    ) -> list[InformationalResponse | Response | Data | EndOfMessage]:
        """Events completed by these bytes. Raises RemoteProtocolError(502), TypeError."""
    def feed_eof(self) -> list[EndOfMessage]:
        """The peer closed: [EndOfMessage] for a body delimited by close, [] between
        messages. Raises RemoteProtocolError(502) mid-message."""
