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
    """One line per request, buffered and flushed by the gateway tick."""

    __slots__ = ("_json", "_buf", "_write", "_flush")

    def __init__(self, stream, json_lines: bool) -> None:
        self._json = json_lines
        self._buf: list = []
        self._write = stream.write
        self._flush = stream.flush

    def record(self, rid: bytes, method: bytes, path: bytes, status: int, worker: str, policy: str,
               model: str, duration: float, ttft: float | None, nbytes: int) -> None:
        now = time.time()
        if self._json:
            doc = {"ts": _iso(now), "level": "info", "logger": "smg.access", "request_id": rid.decode("latin-1"),
                   "method": method.decode("latin-1"), "path": path.decode("latin-1"), "status": status,
                   "worker": worker, "policy": policy, "model": model,
                   "duration_ms": round(duration * 1000, 3), "bytes": nbytes}
            if ttft is not None:
                doc["ttft_ms"] = round(ttft * 1000, 3)
            self._buf.append(orjson.dumps(doc).decode())
        else:
            self._buf.append(
                f"{_iso(now)} INFO smg.access: request_id={rid.decode('latin-1')} method={method.decode('latin-1')} "
                f"path={path.decode('latin-1')} status={status} worker={worker or '-'} policy={policy or '-'} "
                f"model={model or '-'} duration_ms={duration * 1000:.3f} "
                f"ttft_ms={'-' if ttft is None else format(ttft * 1000, '.3f')} bytes={nbytes}")

    def flush(self) -> None:
        buf = self._buf
        if buf:
            self._buf = []
            self._write("\n".join(buf) + "\n")
            self._flush()


class HandlerStream:
    """Adapts a logging.Handler's stream (plain or rotating file) for AccessLog."""

    def __init__(self, handler: logging.Handler) -> None:
        self._h = handler

    def write(self, text: str) -> None:
        h = self._h
        if isinstance(h, logging.handlers.TimedRotatingFileHandler):
            if h.shouldRollover(None):  # type: ignore[arg-type]
                h.doRollover()
            if h.stream is None:
                h.stream = h._open()
        h.stream.write(text)

    def flush(self) -> None:
        self._h.flush()
