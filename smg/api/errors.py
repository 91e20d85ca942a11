"""Error bodies the gateway itself produces, in each API family's own format, and the
one catalogue of the error codes it uses.

OpenAI:    {"error": {"message", "type", "param", "code"}}   (``param`` null unless a
           request field is to blame)
Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"}

Rules:
- Every ``code`` a gateway-made answer carries is a key of ``CODES``; the code decides
  the error ``type`` of both families (an answer with no code, or one not listed, gets
  the type of its status from ``_STATUS_KINDS``). A test keeps the call sites' codes in
  this catalogue.
- Codes marked ``header`` name errors made outside request validation (routing,
  admission, limits, upstream failures), and the two Messages checks on what the HTTP
  relay cannot serve (``max_tokens_zero_not_relayed``,
  ``thinking_budget_exceeds_max_tokens``); their answers also carry
  ``x-smg-error-code: <code>``. Other validation errors and 401s do not.
- Bodies are built with orjson once per error; nothing here runs on a successful request.
"""
from __future__ import annotations

import orjson

OPENAI = 0
ANTHROPIC = 1

# the header naming a gateway error's code
ERROR_CODE_HEADER = b"x-smg-error-code"

_INVALID = "invalid_request_error"

# code -> (OpenAI error type, Anthropic error type, carries x-smg-error-code)
CODES: dict = {
    # request validation (400)
    "json_parse_error": (_INVALID, _INVALID, False),      # not a JSON content type
    "invalid_json": (_INVALID, _INVALID, False),          # not JSON (syntax, encoding, empty)
    "invalid_type": (_INVALID, _INVALID, False),
    "invalid_value": (_INVALID, _INVALID, False),
    "missing_required_parameter": (_INVALID, _INVALID, False),
    "empty_array": (_INVALID, _INVALID, False),
    "prompt_empty": (_INVALID, _INVALID, False),
    "array_above_max_length": (_INVALID, _INVALID, False),
    "unsupported_value": (_INVALID, _INVALID, False),
    "integer_below_min_value": (_INVALID, _INVALID, False),
    "integer_above_max_value": (_INVALID, _INVALID, False),
    "decimal_below_min_value": (_INVALID, _INVALID, False),
    "decimal_above_max_value": (_INVALID, _INVALID, False),
    "invalid_role": (_INVALID, _INVALID, False),
    "top_logprobs_requires_logprobs": (_INVALID, _INVALID, False),
    "stream_options_requires_stream": (_INVALID, _INVALID, False),
    "min_tokens_exceeds_max": (_INVALID, _INVALID, False),
    "regex_conflicts_with_json": (_INVALID, _INVALID, False),
    "ebnf_conflicts_with_json": (_INVALID, _INVALID, False),
    "multiple_constraints": (_INVALID, _INVALID, False),
    "json_schema_name_empty": (_INVALID, _INVALID, False),
    "tool_choice_requires_tools": (_INVALID, _INVALID, False),
    "tool_choice_function_not_found": (_INVALID, _INVALID, False),
    "tool_choice_invalid_mode": (_INVALID, _INVALID, False),
    "tool_choice_tool_not_found": (_INVALID, _INVALID, False),
    "tool_choice_invalid_tool_type": (_INVALID, _INVALID, False),
    # Anthropic Messages checks (their bodies carry no code; the metrics' error_code does)
    "thinking_budget_exceeds_max_tokens": (_INVALID, _INVALID, True),
    "max_tokens_zero_not_relayed": (_INVALID, _INVALID, True),
    "thinking_budget_too_small": (_INVALID, _INVALID, False),
    "string_below_min_length": (_INVALID, _INVALID, False),
    "value_out_of_range": (_INVALID, _INVALID, False),
    "empty_content": (_INVALID, _INVALID, False),
    "mcp_servers_required": (_INVALID, _INVALID, False),
    "invalid_worker_spec": (_INVALID, _INVALID, False),
    "invalid_request": (_INVALID, _INVALID, False),
    "malformed_request": (_INVALID, _INVALID, False),     # HTTP framing the parser refused
    # routing
    "unknown_url": (_INVALID, "not_found_error", True),
    "method_not_allowed": (_INVALID, _INVALID, True),
    "model_not_found": (_INVALID, "not_found_error", True),
    "no_workers": ("server_error", "overloaded_error", True),
    "no_healthy_workers": ("server_error", "overloaded_error", True),
    "no_worker_selected": ("server_error", "overloaded_error", True),
    "no_available_workers": ("server_error", "overloaded_error", True),
    "no_models_available": ("server_error", "overloaded_error", True),
    "cors_origin_not_allowed": ("permission_error", "permission_error", True),
    # limits and admission
    "request_body_too_large": (_INVALID, "request_too_large", True),
    "request_header_fields_too_large": (_INVALID, _INVALID, True),
    "request_timeout": ("timeout_error", "timeout_error", True),
    "admission_queue_full": ("rate_limit_error", "rate_limit_error", True),
    "rate_limit_exceeded": ("rate_limit_error", "rate_limit_error", True),
    "scheduler_queue_full": ("rate_limit_error", "rate_limit_error", True),
    "scheduler_preempted": ("server_error", "overloaded_error", True),
    "queue_timeout": ("timeout_error", "timeout_error", True),
    "scheduler_queue_timeout": ("timeout_error", "timeout_error", True),
    "tenant_rate_limit_exceeded": ("rate_limit_error", "rate_limit_error", True),
    "body_budget_exhausted": ("server_error", "overloaded_error", True),
    # auth (no x-smg-error-code: the 401s carry WWW-Authenticate instead)
    "invalid_api_key": (_INVALID, "authentication_error", False),
    "invalid_token": (_INVALID, "authentication_error", False),
    "forbidden": ("permission_error", "permission_error", False),
    # upstream
    "call_upstream_timeout": ("server_error", "timeout_error", True),
    "call_upstream_request_error": ("server_error", "api_error", True),
    "upstream_error": ("server_error", "api_error", True),
    # the tokenizer API (SMG's error types, given as type and code)
    "tokenizer_not_found": ("tokenizer_not_found", "not_found_error", False),
    "not_found": ("not_found", "not_found_error", False),
    "tokenizer_exists": (_INVALID, _INVALID, False),
    "tokenization_error": ("tokenization_error", "api_error", False),
    "detokenization_error": ("detokenization_error", "api_error", False),
    # the Responses and Conversations APIs (smg/responses)
    "response_not_found": (_INVALID, "not_found_error", False),
    "conversation_not_found": (_INVALID, "not_found_error", False),
    "item_not_found": (_INVALID, "not_found_error", False),
    "storage_unavailable": ("server_error", "api_error", True),
    "response_not_cancellable": (_INVALID, _INVALID, False),
    "too_many_background_responses": ("rate_limit_error", "rate_limit_error", True),
    "mcp_list_tools_failed": ("server_error", "api_error", True),
    # the gateway itself
    "internal_error": ("server_error", "api_error", True),
    "not_implemented": (_INVALID, _INVALID, True),
    "http_version_not_supported": (_INVALID, _INVALID, True),
}

# status -> (OpenAI error type, default code, Anthropic error type), for answers whose
# code names no catalogue entry
_STATUS_KINDS = {
    400: (_INVALID, "invalid_request", _INVALID),
    401: (_INVALID, "invalid_api_key", "authentication_error"),
    403: ("permission_error", "forbidden", "permission_error"),
    404: (_INVALID, "unknown_url", "not_found_error"),
    405: (_INVALID, "method_not_allowed", _INVALID),
    408: ("timeout_error", "request_timeout", "timeout_error"),
    413: (_INVALID, "request_body_too_large", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    431: (_INVALID, "request_header_fields_too_large", _INVALID),
    500: ("server_error", "internal_error", "api_error"),
    501: (_INVALID, "not_implemented", _INVALID),
    502: ("server_error", "call_upstream_request_error", "api_error"),
    503: ("server_error", "no_workers", "overloaded_error"),
    504: ("server_error", "call_upstream_timeout", "timeout_error"),
    505: (_INVALID, "http_version_not_supported", _INVALID),
}
_OTHER = ("server_error", "error", "api_error")


def error_body(family: int, status: int, message: str, code: str | None = None, param: str | None = None,
               rid: bytes | None = None) -> bytes:
    """Returns the JSON error body for ``status`` in the API family's format.

    ``code`` defaults to the status's; ``param`` names the request field to blame
    (OpenAI family only); ``rid`` is the request id an Anthropic body repeats."""
    kinds = _STATUS_KINDS.get(status, _OTHER)
    code = code or kinds[1]
    entry = CODES.get(code)
    if family == ANTHROPIC:
        doc = {"type": "error", "error": {"type": entry[1] if entry else kinds[2], "message": message}}
        if rid:
            doc["request_id"] = rid.decode("latin-1")
        return orjson.dumps(doc)
    return orjson.dumps({"error": {"message": message, "type": entry[0] if entry else kinds[0], "param": param,
                                   "code": code}})


def default_code(status: int) -> str:
    """The ``code`` used when a gateway error names none."""
    return _STATUS_KINDS.get(status, _OTHER)[1]


def code_header(code: str | None, status: int) -> tuple | None:
    """The ``x-smg-error-code`` header of an answer with this code, or None when the
    code is one whose answers carry none (validation, auth)."""
    code = code or default_code(status)
    entry = CODES.get(code)
    if entry is not None and not entry[2]:
        return None
    return (ERROR_CODE_HEADER, code.encode())
