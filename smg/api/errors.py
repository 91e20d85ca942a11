"""Error bodies the gateway itself produces, in each API family's own format.

OpenAI:    {"error": {"message", "type", "code"}}
Anthropic: {"type": "error", "error": {"type", "message"}}
"""
from __future__ import annotations

import orjson

OPENAI = 0
ANTHROPIC = 1

# status -> (OpenAI error type, default code, Anthropic error type)
_KINDS = {
    400: ("invalid_request_error", "invalid_request", "invalid_request_error"),
    401: ("authentication_error", "invalid_api_key", "authentication_error"),
    403: ("permission_error", "forbidden", "permission_error"),
    404: ("not_found_error", "not_found", "not_found_error"),
    405: ("invalid_request_error", "method_not_allowed", "invalid_request_error"),
    408: ("timeout_error", "request_timeout", "timeout_error"),
    413: ("invalid_request_error", "payload_too_large", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    431: ("invalid_request_error", "request_header_fields_too_large", "invalid_request_error"),
    500: ("internal_error", "internal_error", "api_error"),
    501: ("invalid_request_error", "not_implemented", "invalid_request_error"),
    502: ("api_error", "bad_gateway", "api_error"),
    503: ("api_error", "service_unavailable", "overloaded_error"),
    504: ("timeout_error", "upstream_timeout", "timeout_error"),
    505: ("invalid_request_error", "http_version_not_supported", "invalid_request_error"),
}


def error_body(family: int, status: int, message: str, code: str | None = None) -> bytes:
    """Returns the JSON error body for ``status`` in the API family's format."""
    otype, ocode, atype = _KINDS.get(status, ("api_error", "error", "api_error"))
    if family == ANTHROPIC:
        return orjson.dumps({"type": "error", "error": {"type": atype, "message": message}})
    return orjson.dumps({"error": {"message": message, "type": otype, "code": code or ocode}})


def default_code(status: int) -> str:
    """The ``code`` used when a gateway error names none."""
    return _KINDS.get(status, ("", "error", ""))[1]
