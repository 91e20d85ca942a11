"""A small blocking HTTP/1.1 client for the conformance suite (stdlib ``http.client``).

Rules:
- One fresh connection per request, closed afterwards, so nothing one case leaves
  behind (a half-read stream, a poisoned keep-alive connection) reaches the next.
- Headers are sent exactly as given (no ``Accept-Encoding``, no ``User-Agent`` added;
  a header given with the value None is not sent, and stops a default for it);
  ``Host`` and ``Content-Length`` are the only ones the client adds.
- Every call is bounded by ``timeout`` (per socket operation); the body is read to
  the end (a streamed answer included), so a ``Response`` is always complete.
"""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT = 15.0


@dataclass
class Response:
    status: int
    headers: list  # [(lower-case name, value)], in arrival order
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_names(self) -> set:
        return {n for n, _ in self.headers}

    def media_type(self) -> str:
        ct = self.header("content-type") or ""
        return ct.split(";", 1)[0].strip().lower()

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, *, headers: list | dict | None = None,
            body: bytes | str | Any = None, timeout: float = DEFAULT_TIMEOUT) -> Response:
    """Sends one request to 127.0.0.1:``port``. ``body``: bytes/str sent as is, anything
    else JSON-encoded (with ``content-type: application/json`` unless one is given)."""
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body).encode()
        if not any(n.lower() == "content-type" for n, _ in hdrs):
            hdrs.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for n, v in hdrs:
            if v is not None:  # None: the header is not sent at all
                conn.putheader(n, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        elif method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, [(n.lower(), v) for n, v in resp.getheaders()], data)
    finally:
        conn.close()
