"""Error bodies the mock answers with, in the OpenAI and the Anthropic shape.

Rules: every error the mock sends (its own 4xx, injected failures, parse errors) is one
of these two bodies; ``/v1/messages`` uses the Anthropic shape, every other path the
OpenAI one. The ``type`` follows the status the way each vendor's API does.
"""
from __future__ import annotations

import orjson

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}


def openai_error(status: int, message: str) -> bytes:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


def anthropic_error(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
