"""Type stub for smg._native.framing (the pure-Python twin smg.http1.framing_py has the
same API; its module docstring states the rules). mypy's stubtest checks the twin and the
compiled module against this stub (tests/test_stubs.py)."""

from collections.abc import Iterable

__all__ = ["chunked", "collect"]

def collect(events: Iterable[object], out: list, parts: list | None) -> tuple[int, bool]:
    """Appends each Data event's payload to ``out`` (and ``parts`` unless None), up to the
    first EndOfMessage; ``(payload bytes appended, an EndOfMessage was met)``."""

def chunked(head: bytes | None, pieces: Iterable[bytes], end: bool) -> bytes:
    """``head`` (unless None), each non-empty piece as one HTTP/1.1 chunk, and the last
    chunk when ``end``, in one bytes object."""
