"""Validation of ``POST /v1/messages`` bodies (Anthropic Messages).

Field types, SMG's field rules and its cross-field rules, in SMG's order
(smg/api/validate/_core.py). Answers are in the Anthropic error format, which names
no ``code`` or ``param``; the code is still set, for the metrics' ``error_code``.

Content blocks are checked for their ``type`` and the fields that type requires;
a block's deeper parts (image sources, citations, tool definitions) are the worker's
to judge.
"""
from __future__ import annotations

from smg.api.validate._core import (ANY, INVALID_TYPE, Bad, Shape, enum_of, nonempty_rule, opt, opt_bool, opt_f64,
                                    opt_list_of, opt_string, opt_u32, rule_fault, rules, screened, string, struct,
                                    tagged, u32, wrong)
from smg.api.validate.screen import R_INT, T_DOUBT, T_LIST, T_MAP, T_STR, T_TEXT


def _object(v) -> None:
    if type(v) is not dict:
        raise wrong(v, "a map")


def _list(v) -> None:
    if type(v) is not list:
        raise wrong(v, "a sequence")


_TEXT = ({"text": string}, ("text",))

# block type -> (fields, required)
_BLOCKS = {
    "text": _TEXT,
    "image": ({"source": _object}, ("source",)),
    "document": ({"source": _object, "title": opt_string, "context": opt_string}, ("source",)),
    "tool_use": ({"id": string, "name": string, "input": ANY}, ("id", "name", "input")),
    "tool_result": ({"tool_use_id": string, "is_error": opt_bool}, ("tool_use_id",)),
    "thinking": ({"thinking": string, "signature": string}, ("thinking", "signature")),
    "redacted_thinking": ({"data": string}, ("data",)),
    "server_tool_use": ({"id": string, "name": string, "input": ANY}, ("id", "name", "input")),
    "search_result": ({"source": string, "title": string, "content": _list}, ("source", "title", "content")),
    "web_search_tool_result": ({"tool_use_id": string, "content": ANY}, ("tool_use_id", "content")),
    "tool_search_tool_result": ({}, ()),
    "tool_reference": ({}, ()),
}


def _blocks_match(v, blocks: dict) -> bool:
    """Whether ``v`` is an array of blocks each of which decodes."""
    if type(v) is not list:
        return False
    for b in v:
        try:
            tagged(b, "type", blocks, "internally tagged enum")
        except Bad:
            return False
    return True


def _content(v) -> None:
    if type(v) is str or _blocks_match(v, _BLOCKS):
        return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum InputContent")


_MESSAGE = struct({"role": enum_of(("user", "assistant", "system"), "variant identifier"), "content": _content},
                  ("role", "content"), "struct InputMessage")


# the screen vouches for plain text messages with non-empty content (the cross-field rule
# refuses an empty user message)
@screened((T_TEXT, False, frozenset(("user", "assistant", "system")), True))
def _messages(v) -> None:
    _list(v)
    for i, m in enumerate(v):
        try:
            _MESSAGE(m)
        except Bad as e:
            e.where.append(i)
            raise


_SYSTEM_BLOCKS = {"text": _TEXT}


@screened((T_STR, True, None, None))  # vouched for: null or a string
def _system(v) -> None:
    if v is None or type(v) is str or _blocks_match(v, _SYSTEM_BLOCKS):
        return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum SystemContent")


_THINKING = {"enabled": ({"budget_tokens": u32}, ("budget_tokens",)), "disabled": ({}, ())}


@screened((T_DOUBT, True, None, None))
def _thinking(v) -> None:
    if v is not None:
        tagged(v, "type", _THINKING, "internally tagged enum ThinkingConfig")


_TOOL_CHOICES = {
    "auto": ({"disable_parallel_tool_use": opt_bool}, ()),
    "any": ({"disable_parallel_tool_use": opt_bool}, ()),
    "tool": ({"name": string, "disable_parallel_tool_use": opt_bool}, ("name",)),
    "none": ({}, ()),
}


@screened((T_DOUBT, True, None, None))
def _tool_choice(v) -> None:
    if v is not None:
        tagged(v, "type", _TOOL_CHOICES, "internally tagged enum ToolChoice")


@screened((T_LIST, True, (T_MAP, False, None, None), None))
def _tools(v) -> None:
    if v is None:
        return
    _list(v)
    for i, t in enumerate(v):
        if type(t) is not dict:
            raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum Tool", [i])


FIELDS = {
    "model": string,
    "messages": _messages,
    "max_tokens": u32,
    "metadata": opt(struct({"user_id": opt_string}, (), "struct Metadata")),
    "service_tier": opt(enum_of(("auto", "standard_only"), "variant identifier")),
    "stop_sequences": opt_list_of(string),
    "stream": opt_bool,
    "system": _system,
    "temperature": opt_f64,
    "thinking": _thinking,
    "tool_choice": _tool_choice,
    "tools": _tools,
    "top_k": opt_u32,
    "top_p": opt_f64,
}
REQUIRED = ("model", "messages", "max_tokens")


@nonempty_rule
def _model_rule(name, v):
    return None if v else rule_fault(name, "string_below_min_length", "model field is required and cannot be empty")


@nonempty_rule
def _messages_rule(name, v):
    return None if v else rule_fault(name, "empty_array", "messages array is required and cannot be empty")


@screened((R_INT, 1, None, None))
def _max_tokens_rule(name, v):
    if v >= 1:
        return None
    return rule_fault(name, "max_tokens_zero_not_relayed",
                      "must be greater than 0 for this model, which is served through the HTTP relay: the relay "
                      "forwards the request as sent and does not count the prompt")


RULES = rules({"model": _model_rule, "messages": _messages_rule, "max_tokens": _max_tokens_rule})


def _unit(name: str, v):
    if v is not None and not 0.0 <= v <= 1.0:
        return rule_fault(None, "value_out_of_range", f"{name}: range: 0..1")
    return None


def _cross(body: dict):
    for i, m in enumerate(body["messages"]):
        if m["role"] == "user" and not m["content"]:
            return rule_fault(None, "empty_content", f"messages.{i}: user messages must have non-empty content")
    get = body.get
    f = _unit("temperature", get("temperature")) or _unit("top_p", get("top_p"))
    if f is not None:
        return f
    thinking = get("thinking")
    budget = thinking.get("budget_tokens") if thinking is not None and thinking["type"] == "enabled" else None
    if budget is not None and budget < 1024:
        return rule_fault(None, "thinking_budget_too_small",
                          "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    choice = get("tool_choice")
    if choice is not None and choice["type"] != "none":
        tools = get("tools")
        if not tools:
            return rule_fault(None, "tool_choice_requires_tools", "Invalid value for 'tool_choice': 'tool_choice' "
                                                                  "is only allowed when 'tools' are specified.")
        if choice["type"] == "tool" and not any(t.get("name") == choice["name"] for t in tools):
            return rule_fault(None, "tool_choice_tool_not_found",
                              f"Invalid value for 'tool_choice': tool '{choice['name']}' not found in 'tools'.")
    if budget is not None and body["max_tokens"] <= budget:
        f = rule_fault(None, "thinking_budget_exceeds_max_tokens", "")
        f.message = "`max_tokens` must be greater than `thinking.budget_tokens`"
        return f
    return None


COUNT_FIELDS = {k: FIELDS[k] for k in ("model", "messages", "system", "thinking", "tool_choice", "tools")}
COUNT_REQUIRED = ("model", "messages")


@nonempty_rule
def _count_messages_rule(name, v):
    return None if v else rule_fault(name, "empty_array", "at least one message is required")


COUNT_RULES = rules({"model": _model_rule, "messages": _count_messages_rule})


validate_count_tokens = Shape(COUNT_FIELDS, COUNT_REQUIRED, COUNT_RULES)  # ``/v1/messages/count_tokens``
validate = Shape(FIELDS, REQUIRED, RULES, _cross, frozenset(("temperature", "top_p", "thinking", "tool_choice")))
