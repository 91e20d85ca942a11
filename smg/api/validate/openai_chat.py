"""Validation of ``POST /v1/chat/completions`` bodies (OpenAI chat, with the SGLang
sampling extensions SMG types).

What is checked is what SMG's typed request checks, no more: the JSON type of every
field it declares, the ranges and lengths it declares, and its cross-field rules. The
order of the rules is the order SMG applies them (smg/api/validate/_core.py).
"""
from __future__ import annotations

from smg.api.validate._core import (INVALID_TYPE, Bad, Shape, dec_range, f32_value, int_range, nonempty_rule, opt,
                                    opt_bool, opt_f32, opt_i32, opt_i64, opt_list_of, opt_map, opt_map_of, opt_object,
                                    opt_string, opt_string_or_strings, opt_u32, opt_u64, rule_fault, rules, screened,
                                    stop_rule, string, struct, tagged, top_k_rule, wrong)
from smg.api.validate.screen import T_DOUBT, T_STR, T_TEXT

# -- message content --------------------------------------------------------------------


def _content(v) -> None:
    """A string or an array of content-part objects."""
    if type(v) is str:
        return
    if type(v) is list:
        for p in v:
            if type(p) is not dict:
                break
        else:
            return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum MessageContent")


_opt_content = opt(_content)

_FUNCTION_CALL = struct({"name": string, "arguments": opt_string}, ("name",), "struct FunctionCallResponse")
_TOOL_CALL = struct({"id": string, "type": string, "function": _FUNCTION_CALL}, ("id", "type", "function"),
                    "struct ToolCall")

_FUNCTION = struct({"name": string, "description": opt_string, "strict": opt_bool}, ("name",), "struct Function")
_TOOL = struct({"type": string, "function": _FUNCTION}, ("type", "function"), "struct Tool")
_TOOLS = opt_list_of(_TOOL)

# role -> (fields, required fields in declaration order)
_ROLES = {
    "system": ({"content": _opt_content, "name": opt_string}, ()),
    "user": ({"content": _content, "name": opt_string}, ("content",)),
    "assistant": ({"content": _opt_content, "name": opt_string, "tool_calls": opt_list_of(_TOOL_CALL),
                   "reasoning_content": opt_string}, ()),
    "tool": ({"content": _content, "tool_call_id": string, "name": opt_string}, ("content", "tool_call_id")),
    "function": ({"content": string, "name": string}, ("content", "name")),
    "developer": ({"content": _content, "name": opt_string}, ("content",)),
    "root": ({"content": _content, "name": opt_string}, ("content",)),
}


def _message(v) -> None:
    tagged(v, "role", _ROLES, "internally tagged enum ChatMessage")


# roles whose message the screen vouches for as just {"role", "content": "text"} (not
# "root": a valid shape, refused by a cross-field rule)
_TEXT_ROLES = frozenset(("system", "user", "assistant", "developer"))


@screened((T_TEXT, False, _TEXT_ROLES, False))
def _messages(v) -> None:
    if type(v) is not list:
        raise wrong(v, "a sequence")
    for i, m in enumerate(v):
        try:
            _message(m)
        except Bad as e:
            e.where.append(i)
            raise


# -- other structured fields --------------------------------------------------------------

_JSON_SCHEMA = {"name": string, "strict": opt_bool}
_FORMATS = {
    "text": ({}, ()),
    "json_object": ({}, ()),
    "json_schema": ({"json_schema": struct(_JSON_SCHEMA, ("name", "schema"), "struct JsonSchemaFormat")},
                    ("json_schema",)),
}


@screened((T_DOUBT, True, None, None))
def _response_format(v) -> None:
    if v is not None:
        tagged(v, "type", _FORMATS, "internally tagged enum ResponseFormat")


_TOOL_CHOICE_VALUES = ("none", "auto", "required")


@screened((T_DOUBT, True, None, None))
def _tool_choice(v) -> None:
    """"none" | "auto" | "required" | {"type": "function", "function": {"name"}} |
    {"type": "allowed_tools", "mode", "tools"}."""
    if v is None:
        return
    if type(v) is str:
        if v in _TOOL_CHOICE_VALUES:
            return
    elif type(v) is dict:
        t = v.get("type")
        if t == "function":
            f = v.get("function")
            if type(f) is dict and type(f.get("name")) is str:
                return
        elif t == "allowed_tools":
            if type(v.get("mode")) is str and type(v.get("tools")) is list:
                return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum ToolChoice")


@screened((T_STR, True, None, None))
def _verbosity(v) -> None:
    if v is not None and type(v) is not str:
        raise wrong(v, "a string")


@screened((T_DOUBT, True, None, None))
def _function_call(v) -> None:
    """The deprecated ``function_call``: "none", "auto" or {"name"}."""
    if v is None or type(v) is dict:
        return
    if type(v) is not str:
        raise Bad("json_parse_error", "function_call must be a string or object")
    if v != "none" and v != "auto":
        raise Bad("json_parse_error", f'unknown function_call value: "{v}"')


_STREAM_OPTIONS = opt(struct({"include_usage": opt_bool, "continuous_usage_stats": opt_bool}, (),
                             "struct StreamOptions"))

FIELDS = {
    "messages": _messages,
    "model": string,
    "frequency_penalty": opt_f32,
    "function_call": _function_call,
    "functions": opt_list_of(_FUNCTION),
    "logit_bias": opt_map_of(f32_value),
    "logprobs": opt_bool,
    "max_tokens": opt_u32,
    "max_completion_tokens": opt_u32,
    "metadata": opt_map_of(string),
    "modalities": opt_list_of(string),
    "n": opt_u32,
    "parallel_tool_calls": opt_bool,
    "presence_penalty": opt_f32,
    "prompt_cache_key": opt_string,
    "thinking": opt_object("struct ThinkingParam"),
    "response_format": _response_format,
    "safety_identifier": opt_string,
    "seed": opt_i64,
    "service_tier": opt_string,
    "stop": opt_string_or_strings,
    "stream": opt_bool,
    "stream_options": _STREAM_OPTIONS,
    "temperature": opt_f32,
    "tool_choice": _tool_choice,
    "tools": _TOOLS,
    "top_logprobs": opt_u32,
    "top_p": opt_f32,
    "verbosity": _verbosity,
    "top_k": opt_i32,
    "min_p": opt_f32,
    "min_tokens": opt_u32,
    "repetition_penalty": opt_f32,
    "regex": opt_string,
    "ebnf": opt_string,
    "stop_token_ids": opt_list_of(opt_u32),
    "no_stop_trim": opt_bool,
    "ignore_eos": opt_bool,
    "continue_final_message": opt_bool,
    "skip_special_tokens": opt_bool,
    "lora_path": opt_string,
    "session_params": opt_map,
    "separate_reasoning": opt_bool,
    "stream_reasoning": opt_bool,
    "chat_template_kwargs": opt_map,
    "return_hidden_states": opt_bool,
    "sampling_seed": opt_u64,
}
REQUIRED = ("messages", "model")


@nonempty_rule
def _messages_rule(name, v):
    if not v:
        return rule_fault(name, "empty_array", "Invalid 'messages': empty array. Expected an array with minimum "
                                               "length 1, but got an empty array instead.")
    return None


_VERBOSITY = ("low", "medium", "high")


def _verbosity_rule(name, v):
    if v in _VERBOSITY:
        return None
    return rule_fault(name, "unsupported_value", f"Invalid value: '{v}' for parameter 'verbosity'; supported "
                                                 "values are 'low', 'medium' and 'high'")


_PENALTY = dec_range(-2.0, 2.0)
_AT_LEAST_1 = int_range(1, None)

RULES = rules({  # declaration order of the typed request
    "messages": _messages_rule,
    "frequency_penalty": _PENALTY,
    "max_tokens": _AT_LEAST_1,
    "max_completion_tokens": _AT_LEAST_1,
    "n": int_range(1, 10),
    "presence_penalty": _PENALTY,
    "stop": stop_rule,
    "temperature": dec_range(0.0, 2.0),
    "top_logprobs": int_range(0, 20),
    "top_p": dec_range(0.0, 1.0, lo_open=True),
    "verbosity": _verbosity_rule,
    "top_k": top_k_rule,
    "min_p": dec_range(0.0, 1.0),
    "repetition_penalty": dec_range(0.0, 2.0),
})


# the fields phase 3 reads besides the messages
_CROSS_FIELDS = frozenset(("top_logprobs", "stream_options", "min_tokens", "response_format", "regex", "ebnf",
                           "tools", "functions", "tool_choice"))


def _cross(body: dict):
    """Phase 3, in SMG's order; None when every rule holds."""
    for m in body["messages"]:
        if m["role"] == "root":
            return rule_fault(None, "invalid_role", "invalid role: root")
    if body.keys().isdisjoint(_CROSS_FIELDS):
        return None
    get = body.get
    if get("top_logprobs") is not None and not get("logprobs"):
        return rule_fault(None, "top_logprobs_requires_logprobs",
                          "top_logprobs is only allowed when logprobs is enabled")
    if get("stream_options") is not None and not get("stream"):
        return rule_fault(None, "stream_options_requires_stream",
                          "The 'stream_options' parameter is only allowed when 'stream' is enabled")
    min_tokens = get("min_tokens")
    if min_tokens is not None:
        cap = get("max_completion_tokens")
        if cap is None:
            cap = get("max_tokens")
        if cap is not None and min_tokens > cap:
            return rule_fault(None, "min_tokens_exceeds_max",
                              "min_tokens cannot exceed max_tokens/max_completion_tokens")
    fmt = get("response_format")
    fmt_type = fmt["type"] if fmt is not None else None
    json_format = fmt_type == "json_object" or fmt_type == "json_schema"
    regex = get("regex") is not None
    ebnf = get("ebnf") is not None
    if json_format and regex:
        return rule_fault(None, "regex_conflicts_with_json", "cannot use regex constraint with JSON response format")
    if json_format and ebnf:
        return rule_fault(None, "ebnf_conflicts_with_json", "cannot use EBNF constraint with JSON response format")
    if regex + ebnf + (fmt_type == "json_schema") > 1:
        return rule_fault(None, "multiple_constraints", "only one structured output constraint (regex, ebnf, or "
                                                        "json_schema) can be active at a time")
    if fmt_type == "json_schema" and not fmt["json_schema"]["name"]:
        return rule_fault(None, "json_schema_name_empty", "JSON schema name cannot be empty")
    tools = get("tools")
    if tools is None:
        tools = get("functions")
        if tools is not None:
            tools = [{"type": "function", "function": f} for f in tools]
    if tools:
        for i, t in enumerate(tools):
            p = t["function"].get("parameters")
            if p is not None and type(p) is not dict:
                return rule_fault(None, INVALID_TYPE, f"Invalid 'tools[{i}].function.parameters': expected an "
                                                      f"object, but got {_KIND.get(type(p), 'a value')} instead")
    choice = get("tool_choice")
    if choice is not None:
        return _tool_choice_rule(choice, tools)
    return None


_KIND = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}


def _tool_choice_rule(choice, tools):
    if choice != "none" and choice != "auto" and not tools:
        return rule_fault(None, "tool_choice_requires_tools", "Invalid value for 'tool_choice': 'tool_choice' is "
                                                              "only allowed when 'tools' are specified.")
    if not tools or type(choice) is not dict:
        return None
    names = {t["function"]["name"] for t in tools if t["type"] == "function"}
    if choice["type"] == "function":
        name = choice["function"]["name"]
        if name not in names:
            return rule_fault(None, "tool_choice_function_not_found",
                              f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'.")
        return None
    mode = choice["mode"]
    if mode != "auto" and mode != "required":
        return rule_fault(None, "tool_choice_invalid_mode",
                          f"Invalid value for 'tool_choice.mode': must be 'auto' or 'required', got '{mode}'.")
    for ref in choice["tools"]:
        if type(ref) is dict and ref.get("type") == "function":
            if ref.get("name") not in names:
                return rule_fault(None, "tool_choice_tool_not_found",
                                  f"Invalid value for 'tool_choice.tools': tool '{ref.get('name')}' not found in "
                                  "'tools'.")
        else:
            kind = ref.get("type") if type(ref) is dict else ref
            return rule_fault(None, "tool_choice_invalid_tool_type",
                              "Invalid value for 'tool_choice.tools': Chat Completion API only supports function "
                              f"tools, got '{kind}'.")
    return None


validate = Shape(FIELDS, REQUIRED, RULES, _cross, _CROSS_FIELDS)
