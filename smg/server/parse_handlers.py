"""The parse endpoints (admin): run one output parser over a text and answer the result.

- ``POST /parse/reasoning`` (alias ``/v1/parser/reasoning``): ``{text, reasoning_parser}``
  → ``{normal_text, reasoning_text, success}``.
- ``POST /parse/function_call`` (alias ``/v1/parser/tool``): ``{text, tool_call_parser,
  tools}`` → ``{remaining_text, tool_calls: [{function: {name, arguments}}], success}``.

Rules:
- The body is decoded field by field (smg/api/validate, plain-text answers: a 415
  for a non-JSON content type, 400 for bad JSON, 422 naming the field that is missing
  or of the wrong type, ``tools`` an array of ``{type, function: {name, …}}``);
  the validators are the endpoint rows' (``REASONING`` / ``FUNCTION_CALL``), run
  through the validation filter's ``parse_body`` before any parser.
- An unknown parser name is a 400 ``{"error": "Unknown … parser: NAME", "success":
  false}``.
- Parsing is complete mode (``parse``) on a fresh parser; parsers raise nothing
  (smg/parsers), so the handler has no recovery path of its own.
- The tool registry is imported on the first ``function_call``; the handlers see the
  parser registries and nothing of the gateway.
"""
from __future__ import annotations

import orjson

from smg.api.validate import Validator
from smg.api.validate._core import Shape, opt_bool, opt_list_of, opt_string, string, struct, wrong
from smg.parsers import select
from smg.server.filters import STOP
from smg.server.handlers import parse_body

_FUNCTION = struct({"name": string, "description": opt_string, "strict": opt_bool}, ("name",), "struct Function")
_TOOL_LIST = opt_list_of(struct({"type": string, "function": _FUNCTION}, ("type", "function"), "struct Tool"))


def _tools(v) -> None:
    if v is None:
        raise wrong(v, "a sequence")  # required: null is a wrong type
    _TOOL_LIST(v)


REASONING = Validator(Shape({"text": string, "reasoning_parser": string}, ("text", "reasoning_parser"), plain=True),
                      "SeparateReasoningRequest", plain=True)
FUNCTION_CALL = Validator(Shape({"text": string, "tool_call_parser": string, "tools": _tools},
                                ("text", "tool_call_parser", "tools"), plain=True),
                          "ParseFunctionCallRequest", plain=True)


def _body(conn, ctx):
    """The validated body, or None when the refusal was sent."""
    verdict = parse_body(conn, ctx)
    if verdict is None:
        return ctx.body
    if verdict is not STOP:  # a JSON-format refusal (not given by these validators)
        conn.reply_error(verdict.status, verdict.message, code=verdict.code)
    return None


def _unknown(conn, ctx, kind: str, name: str) -> None:
    ctx.error_code = "unknown_parser"
    conn.reply(400, orjson.dumps({"error": f"Unknown {kind} parser: {name}", "success": False}))


class ParseAPI:
    """Handlers of the ``/parse/*`` rows of the endpoint table (smg/server/endpoints.py)."""

    def __init__(self) -> None:
        self._reasoning = select.registry("reasoning")
        self._tools = None  # the tool registry, on first use

    def reasoning(self, conn, ctx) -> None:
        obj = _body(conn, ctx)
        if obj is None:
            return
        text, name = obj["text"], obj["reasoning_parser"]
        try:
            parser = self._reasoning.create(name)
        except KeyError:
            _unknown(conn, ctx, "reasoning", name)
            return
        r = parser.parse(text)
        conn.reply(200, orjson.dumps({"normal_text": r.normal_text, "reasoning_text": r.reasoning_text,
                                      "success": True}))

    def function_call(self, conn, ctx) -> None:
        obj = _body(conn, ctx)
        if obj is None:
            return
        text, name, tools = obj["text"], obj["tool_call_parser"], obj["tools"]
        reg = self._tools
        if reg is None:
            reg = self._tools = select.registry("tool")
        try:
            parser = reg.create(name, tools)
        except KeyError:
            _unknown(conn, ctx, "tool", name)
            return
        r = parser.parse(text)
        calls = [{"function": {"name": c.name, "arguments": c.arguments}} for c in r.calls]
        conn.reply(200, orjson.dumps({"remaining_text": r.normal_text, "tool_calls": calls, "success": True}))
