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
    """Talking to a worker failed. Callers dispatch on the subclass, never on the text.

    Attributes:
        status_hint: the status the gateway answers with when this ends the request.
        kind: the failure's label (``smg_router_request_errors_total``/access log), one
            fixed word per subclass.
    """

    status_hint = 502
    kind = "upstream_error"

    def __init__(self, msg: str, status_hint: int | None = None) -> None:
        super().__init__(msg)
        if status_hint is not None:
            self.status_hint = status_hint


class ConnectFailed(UpstreamError):
    """The worker's address refused or could not be reached."""

    kind = "connect_failed"


class ConnectTimeout(UpstreamError):
    """Opening the connection took longer than ``--connect-timeout-secs``."""

    status_hint = 504
    kind = "connect_timeout"


class UpstreamTimeout(UpstreamError):
    """The worker did not finish within the request deadline."""

    status_hint = 504
    kind = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """The worker sent bytes HTTP forbids (a malformed response)."""

    kind = "upstream_protocol"


class UpstreamClosed(UpstreamError):
    """The worker closed the connection before the response was complete."""

    kind = "upstream_closed"
