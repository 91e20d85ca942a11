# Stub for the compiled smg._native.sse; the pure-Python twin
# smg/streaming/sse_py.py has the same API (mypy's stubtest checks both against this
# stub: tests/test_stubs.py).

from typing import final

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEScanner", "StreamEnd", "usage_counts"]

DEFAULT_MAX_EVENT_SIZE: int

@final
class SSEScanner:
    """Incremental SSE scanner: feed it the upstream bytes, read back completed events."""

    def __init__(self, *, max_event_size: int = ...) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Data of every event this piece completed. Raises TypeError, RemoteProtocolError(502)."""
    def observe(self, data: bytes | bytearray | memoryview | list | tuple) -> int:
        """Like feed() for one piece or a list of pieces, but returns only how many data
        events completed; reads the monotonic clock into first_t/last_t when any did."""
    def usage(self) -> tuple[int, int] | None:
        """usage_counts(last_data) without building last_data."""
    def feed_eof(self) -> list[bytes]:
        """End of stream: always [], sets `truncated` if an event was left unfinished."""
    @property
    def max_event_size(self) -> int: ...
    @property
    def events(self) -> int:
        """Completed events, including those without a data field."""
    @property
    def data_events(self) -> int:
        """Completed events that had a data field."""
    @property
    def bytes_seen(self) -> int:
        """Bytes accepted by feed()."""
    @property
    def done(self) -> bool:
        """True once an event whose data is exactly b"[DONE]" completed."""
    @property
    def truncated(self) -> bool:
        """True if feed_eof() found part of an event pending (or the stream had failed)."""
    @property
    def first_t(self) -> float:
        """observe(): time.monotonic() when data events first completed (0.0: never)."""
    @property
    def last_t(self) -> float:
        """observe(): time.monotonic() when data events last completed (0.0: never)."""
    @property
    def last_data(self) -> bytes | None:
        """Data of the most recent data event other than [DONE], or None."""

def usage_counts(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(input tokens, output tokens) named by a usage/meta_info object in ``data``, or None."""


@final
class StreamEnd:
    """Watches an SSE answer for its end: ``done`` ([DONE] seen; later bytes are
    dropped), ``finished`` (a finish reason / message_stop seen)."""

    def __init__(self, anthropic: bool) -> None: ...
    def __call__(self, events: list) -> list | None:
        """None when the batch passes unchanged, else the new list: the [DONE] event cut
        after its blank line, later Data events dropped."""
    @property
    def done(self) -> bool:
        """True once a Data event held a ``data: [DONE]`` line."""
    @property
    def finished(self) -> bool:
        """True once a Data event carried a non-null finish_reason (message_stop)."""
    @property
    def complete(self) -> bool:
        """done or finished."""
