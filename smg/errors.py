"""The exception tree shared by every part of smg, including both twins of each
native module (the Cython modules import these classes, so C and Python raise the
same types).

Rules:
- Protocol errors carry the HTTP status they imply in ``status_hint``.
- Parsers raise ``RemoteProtocolError`` for bad bytes received from a peer; any other
  exception escaping a parser's ``feed`` is a bug.
"""
from __future__ import annotations


class SmgError(Exception):
    """Base class of every error smg raises on purpose."""


class ProtocolError(SmgError):
    """A peer or we broke HTTP framing rules.

    Attributes:
        status_hint: the HTTP status a server should answer with (400 unless said).
    """

    status_hint = 400

    def __init__(self, msg: str, status_hint: int | None = None) -> None:
        super().__init__(msg)
        if status_hint is not None:
            self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We tried to do something HTTP forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes HTTP forbids."""


class ConfigError(SmgError):
    """A setting is invalid. ``key`` names it as the user wrote it (flag or config key)."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(f"{key}: {msg}")
        self.key = key


class UpstreamError(SmgError):
    """Talking to a worker failed (connect, reset, timeout, malformed response)."""

    status_hint = 502

    def __init__(self, msg: str, status_hint: int | None = None) -> None:
        super().__init__(msg)
        if status_hint is not None:
            self.status_hint = status_hint
