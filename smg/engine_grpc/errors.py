"""gRPC status codes → the gateway's typed upstream errors.

Rules (one table, ``from_status``):
- ``DEADLINE_EXCEEDED`` → ``UpstreamTimeout`` (504).
- ``UNAVAILABLE`` before the first response message → ``ConnectFailed`` (502: nothing
  was produced, another worker may be tried); after it → ``UpstreamClosed`` (the engine
  or the connection went away mid-stream). SGLang's servicer also answers its own 503
  as ``UNAVAILABLE``: it lands on the same classes, retryable either way.
- ``CANCELLED`` not asked for by us → ``UpstreamClosed`` (a server stopping cancels its
  calls); a cancel we asked for is never surfaced as an error.
- ``INVALID_ARGUMENT`` → ``EngineRejected`` carrying 400 and the engine's message (the
  servicers raise it for a request they refuse, SGLang's HTTP 400 included).
- ``RESOURCE_EXHAUSTED`` → ``EngineOverloaded`` (503: the engine is out of room, the
  request itself is fine; 503 is in the retryable set, smg.md §4).
- every other code → ``EngineFailed`` (502).
Every error made here carries ``grpc_code``: the status code's name ("UNAVAILABLE").
"""
from __future__ import annotations

import grpc

from smg.errors import (
    ConnectFailed,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)


class EngineRejected(UpstreamError):
    """The engine refused the request as invalid (``INVALID_ARGUMENT``); answered 400
    with the engine's message."""

    status_hint = 400
    kind = "engine_rejected"


class EngineOverloaded(UpstreamError):
    """The engine is out of capacity (``RESOURCE_EXHAUSTED``)."""

    status_hint = 503
    kind = "engine_overloaded"


class EngineFailed(UpstreamError):
    """The engine failed the call with any other status (``INTERNAL``, ``UNKNOWN``, ...)."""

    kind = "engine_failed"


class TokenizerBundleError(UpstreamProtocolError):
    """The streamed tokenizer bundle is unusable: no chunk, no final sha256, too large,
    or its bytes do not hash to the sha256 the engine sent."""


def from_status(code: grpc.StatusCode, details: str | None, *, started: bool) -> UpstreamError:
    """The typed error for a call that ended with ``code``.

    ``started``: at least one response message had been received on the call.
    """
    details = details or ""
    text = f"engine answered {code.name}: {details}" if details else f"engine answered {code.name}"
    err: UpstreamError
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        err = UpstreamTimeout(text)
    elif code is grpc.StatusCode.UNAVAILABLE:
        err = UpstreamClosed(text) if started else ConnectFailed(text)
    elif code is grpc.StatusCode.CANCELLED:
        err = UpstreamClosed(text)
    elif code is grpc.StatusCode.INVALID_ARGUMENT:
        err = EngineRejected(details or text)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        err = EngineOverloaded(text)
    else:
        err = EngineFailed(text)
    setattr(err, "grpc_code", code.name)  # every error made here carries it (module rules)
    return err


def from_rpc_error(exc: grpc.aio.AioRpcError, *, started: bool) -> UpstreamError:
    """``from_status`` for the exception grpc.aio raises."""
    return from_status(exc.code(), exc.details(), started=started)
