"""Logging set-up (plain or JSON lines, to stderr or a daily file under --log-dir) and
the access log.

The access log is written once per request, so it avoids the logging module on the hot
path: each line is formatted at once into a buffer that the gateway's tick flushes
(every 0.1 s) with a single write. Error logs go through ``logging`` as usual and carry
the request id in their message.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

import orjson

from smg.observability.tally import AccessBuffer

_LEVELS = {"warn": "WARNING"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": _iso(record.created), "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def open_log_stream(log_dir: str):
    """A text stream for logs: stderr, or a file in ``log_dir`` rotated daily."""
    if not log_dir:
        return None
    os.makedirs(log_dir, exist_ok=True)
    return logging.handlers.TimedRotatingFileHandler(os.path.join(log_dir, "smg.log"), when="midnight",
                                                     backupCount=14, encoding="utf-8")


def setup_logging(level: str, json_lines: bool = False, log_dir: str = "") -> logging.Handler:
    """Configures the root logger; returns the handler (the access log shares it)."""
    handler = open_log_stream(log_dir) or logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, level.upper()))
    return handler


class AccessLog:
    """One line per request, buffered and flushed by the gateway tick.

    The labels that depend only on the request's shape (method, path, status, worker,
    policy, model) are rendered once per shape (``labels``) and kept by the shape's
    Tally, which formats the rest of the line into ``buffer`` (smg.observability.tally:
    in C when the extension is built). ``flush`` writes what accumulated with one write
    and refreshes the wall-clock offset the lines' timestamps are computed with.
    """

    __slots__ = ("_json", "_stream", "buffer")

    def __init__(self, stream, json_lines: bool) -> None:
        self._json = json_lines
        self._stream = stream
        self.buffer = AccessBuffer(json_lines)
        self.buffer.offset = time.time() - time.monotonic()

    def labels(self, method: bytes, path: bytes, status: int, worker: str, policy: str, model: str) -> bytes:
        """The pre-rendered part of a line for one request shape (JSON: members, no braces)."""
        if self._json:
            return orjson.dumps({"level": "info", "logger": "smg.access", "method": method.decode("latin-1"),
                                 "path": path.decode("latin-1"), "status": status, "worker": worker,
                                 "policy": policy, "model": model})[1:-1]
        return b"method=%s path=%s status=%d worker=%s policy=%s model=%s" % (
            method or b"-", path or b"-", status, worker.encode() or b"-", policy.encode() or b"-",
            model.encode() or b"-")

    def flush(self) -> None:
        buf = self.buffer
        buf.offset = time.time() - time.monotonic()
        if buf.pending:
            self._stream.write(buf.take())
            self._stream.flush()


class HandlerStream:
    """Adapts a logging.Handler's stream (stderr or the rotating file) to the bytes the
    AccessLog writes."""

    def __init__(self, handler: logging.Handler) -> None:
        self._h = handler

    def write(self, data: bytes) -> None:
        h = self._h
        if isinstance(h, logging.handlers.TimedRotatingFileHandler):
            if h.shouldRollover(None):  # type: ignore[arg-type]
                h.doRollover()
            if h.stream is None:
                h.stream = h._open()
        stream = h.stream
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            stream.flush()
            buf.write(data)
        else:
            stream.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        stream = self._h.stream
        buf = getattr(stream, "buffer", None)
        (buf or stream).flush()
