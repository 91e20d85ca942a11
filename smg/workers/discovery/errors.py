"""The errors of Kubernetes discovery.

Rules:
1. ``KubeError`` is the API server refusing (``status`` its HTTP status, 0 when
   there is none, e.g. an unreadable token file); I/O failures are smg's
   ``UpstreamError``, raised by the control-plane client.
2. ``KubeGone`` (410) is its own class: it is the one error answered by listing again
   rather than by backing off.
"""
from __future__ import annotations

from smg.errors import SmgError


class KubeError(SmgError):
    """The API server answered with an error (``status`` is its HTTP status)."""

    def __init__(self, msg: str, status: int = 0) -> None:
        super().__init__(msg)
        self.status = status


class KubeGone(KubeError):
    """410 Gone: the resourceVersion we watch from was compacted; list again."""

    def __init__(self, msg: str = "resource version too old") -> None:
        super().__init__(msg, 410)
