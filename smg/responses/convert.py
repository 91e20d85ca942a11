"""The Responses API's request and answer, converted to and from a chat completion.

A Responses request becomes an ordinary ``/v1/chat/completions`` request (so any worker
that speaks chat answers it, HTTP or gRPC), and the chat answer becomes a Response
object. Pure functions: no I/O, no storage.

Rules:
- ``check(body)`` refuses what cannot be served with a ``Bad`` (status 400, message,
  code, param): wrong types, unknown item or content types, tool types other than
  ``function`` (MCP and built-in tools are not served yet), ``background`` with
  ``stream`` or without ``store``. Nothing a request asks for is silently dropped.
- The chat request: ``instructions`` as the first system message, then the history
  (items of earlier turns), then the turn's input items. Message items keep their role
  (``developer`` is sent as ``system``); ``function_call`` items become an assistant
  message's ``tool_calls`` (consecutive calls in one message); ``function_call_output``
  items become ``tool`` messages, an ``mcp_call`` both; ``reasoning``, ``mcp_list_tools``
  and approval items are not sent back to the model.
  ``max_output_tokens`` → ``max_tokens``, ``text.format`` → ``response_format``,
  ``reasoning.effort`` → ``reasoning_effort``; ``temperature``, ``top_p``, ``tool_choice``,
  ``parallel_tool_calls``, ``user`` pass as they are (function tools re-shaped).
- The answer's output items, in order: a ``reasoning`` item (the chat message's
  ``reasoning_content``), a ``message`` (its content), one ``function_call`` per tool
  call. ``finish_reason`` ``length`` makes the response ``incomplete``
  (``max_output_tokens``), ``content_filter`` likewise (``content_filter``).
"""
from __future__ import annotations

import secrets

MAX_INPUT_ITEMS = 2048
MAX_METADATA_KEYS = 16

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "mcp_approval_response")


def new_id(prefix: str) -> str:
    """An id in OpenAI's shape: ``prefix`` + 48 hex digits (``resp_``, ``msg_``, ...)."""
    return prefix + secrets.token_hex(24)


class Bad(Exception):
    """A request the API refuses: 400 with SMG's code and the field to blame."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value",
                 status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def _type(body: dict, key: str, types, what: str) -> None:
    v = body.get(key)
    if v is None:
        return
    if not isinstance(v, types) or (type(v) is bool and bool not in _tuple(types)):
        raise Bad(f"'{key}' must be {what}", key, "invalid_type")


def _tuple(t) -> tuple:
    return t if type(t) is tuple else (t,)


def check_metadata(meta, param: str = "metadata") -> None:
    if meta is None:
        return
    if type(meta) is not dict:
        raise Bad(f"'{param}' must be an object", param, "invalid_type")
    if len(meta) > MAX_METADATA_KEYS:
        raise Bad(f"'{param}' may hold at most {MAX_METADATA_KEYS} keys", param, "array_above_max_length")
    for k, v in meta.items():
        if len(k) > 64 or type(v) is not str or len(v) > 512:
            raise Bad(f"'{param}' keys are at most 64 characters and values strings of at most 512",
                      param, "invalid_value")


def check(body: dict) -> None:
    """Raises ``Bad`` for a request this module cannot convert (module rules)."""
    model = body.get("model")
    if type(model) is not str or not model:
        raise Bad("'model' is required", "model", "missing_required_parameter")
    if "input" not in body or body["input"] is None:
        raise Bad("'input' is required", "input", "missing_required_parameter")
    _type(body, "instructions", str, "a string")
    _type(body, "previous_response_id", str, "a string")
    _type(body, "stream", bool, "a boolean")
    _type(body, "store", bool, "a boolean")
    _type(body, "background", bool, "a boolean")
    _type(body, "parallel_tool_calls", bool, "a boolean")
    _type(body, "user", str, "a string")
    _type(body, "temperature", (int, float), "a number")
    _type(body, "top_p", (int, float), "a number")
    t = body.get("temperature")
    if t is not None and not 0 <= t <= 2:
        raise Bad("'temperature' must be between 0 and 2", "temperature", "decimal_above_max_value")
    m = body.get("max_output_tokens")
    if m is not None and (type(m) is not int or m < 1):
        raise Bad("'max_output_tokens' must be a positive integer", "max_output_tokens",
                  "integer_below_min_value")
    if body.get("background") is True:
        if body.get("store") is False:
            raise Bad("background responses must be stored ('store' cannot be false)", "store", "invalid_value")
        if body.get("stream") is True:
            raise Bad("background responses are not streamed by this gateway", "stream", "unsupported_value")
    check_metadata(body.get("metadata"))
    conv = body.get("conversation")
    if conv is not None:
        if not (type(conv) is str or type(conv) is dict and type(conv.get("id")) is str):
            raise Bad("'conversation' must be a conversation id or {\"id\": ...}", "conversation", "invalid_type")
        if body.get("previous_response_id") is not None:
            raise Bad("'previous_response_id' and 'conversation' cannot be used together", "conversation",
                      "invalid_value")
    inp = body["input"]
    if type(inp) is list:
        if len(inp) > MAX_INPUT_ITEMS:
            raise Bad(f"'input' may hold at most {MAX_INPUT_ITEMS} items", "input", "array_above_max_length")
        for i, it in enumerate(inp):
            check_item(it, f"input[{i}]")
    elif type(inp) is not str:
        raise Bad("'input' must be a string or a list of items", "input", "invalid_type")
    tools = body.get("tools")
    if tools is not None:
        if type(tools) is not list:
            raise Bad("'tools' must be a list", "tools", "invalid_type")
        for i, tool in enumerate(tools):
            if type(tool) is not dict:
                raise Bad("a tool must be an object", f"tools[{i}]", "invalid_type")
            if tool.get("type") == "mcp":
                continue   # checked by smg/responses/mcp.py
            if tool.get("type") != "function":
                raise Bad(f"tools of type {tool.get('type')!r} are not supported by this gateway yet "
                          "(function and mcp tools are)", f"tools[{i}].type", "unsupported_value")
            if type(tool.get("name")) is not str or not tool["name"]:
                raise Bad("a function tool needs a 'name'", f"tools[{i}].name", "missing_required_parameter")
    tc = body.get("tool_choice")
    if tc is not None and tc not in ("auto", "none", "required") and not (
            type(tc) is dict and tc.get("type") == "function" and type(tc.get("name")) is str):
        raise Bad("'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": ...}",
                  "tool_choice", "invalid_value")
    text = body.get("text")
    if text is not None:
        fmt = text.get("format") if type(text) is dict else None
        if type(text) is not dict or fmt is not None and (type(fmt) is not dict or fmt.get("type") not in (
                "text", "json_object", "json_schema")):
            raise Bad("'text.format' must be of type text, json_object or json_schema", "text.format",
                      "invalid_value")
        if fmt and fmt.get("type") == "json_schema" and (type(fmt.get("name")) is not str
                                                         or type(fmt.get("schema")) is not dict):
            raise Bad("a json_schema format needs a 'name' and a 'schema'", "text.format", "invalid_value")
    r = body.get("reasoning")
    if r is not None and (type(r) is not dict or r.get("effort") not in (None, "minimal", "low", "medium", "high")):
        raise Bad("'reasoning.effort' must be minimal, low, medium or high", "reasoning", "invalid_value")


def check_item(it, param: str) -> None:
    """Raises ``Bad`` for an input item that cannot be converted."""
    if type(it) is not dict:
        raise Bad("an input item must be an object", param, "invalid_type")
    kind = it.get("type", "message")
    if kind not in _ITEM_TYPES:
        raise Bad(f"input items of type {kind!r} are not supported", f"{param}.type", "unsupported_value")
    if kind == "message":
        if it.get("role") not in _ROLES:
            raise Bad("a message's 'role' must be user, assistant, system or developer", f"{param}.role",
                      "invalid_role")
        content = it.get("content")
        if type(content) is list:
            for j, part in enumerate(content):
                pt = part.get("type") if type(part) is dict else None
                if pt in _TEXT_PARTS:
                    if type(part.get("text", part.get("refusal"))) is not str:
                        raise Bad("a text part needs 'text'", f"{param}.content[{j}]", "invalid_type")
                elif pt == "input_image":
                    if type(part.get("image_url")) is not str:
                        raise Bad("an input_image part needs 'image_url'", f"{param}.content[{j}]", "invalid_type")
                else:
                    raise Bad(f"content parts of type {pt!r} are not supported", f"{param}.content[{j}]",
                              "unsupported_value")
        elif type(content) is not str:
            raise Bad("a message's 'content' must be a string or a list of parts", f"{param}.content",
                      "invalid_type")
    elif kind == "function_call":
        for k in ("call_id", "name", "arguments"):
            if type(it.get(k)) is not str:
                raise Bad(f"a function_call item needs '{k}'", f"{param}.{k}", "missing_required_parameter")
    elif kind == "function_call_output":
        if type(it.get("call_id")) is not str or type(it.get("output")) is not str:
            raise Bad("a function_call_output item needs 'call_id' and 'output'", param,
                      "missing_required_parameter")
    elif kind == "mcp_approval_response":
        if type(it.get("approval_request_id")) is not str or type(it.get("approve")) is not bool:
            raise Bad("an mcp_approval_response item needs 'approval_request_id' and 'approve'", param,
                      "missing_required_parameter")


# -- items ------------------------------------------------------------------------------


def input_items(inp) -> list:
    """The turn's input as stored items: each with an ``id``, a ``type`` and (messages)
    ``content`` as a list of parts."""
    if type(inp) is str:
        inp = [{"role": "user", "content": inp}]
    out = []
    for it in inp:
        kind = it.get("type", "message")
        if kind == "message":
            content = it["content"]
            if type(content) is str:
                content = [text_part(content) if it["role"] == "assistant" else
                           {"type": "input_text", "text": content}]
            out.append({"id": it.get("id") or new_id("msg_"), "type": "message", "role": it["role"],
                        "content": content, "status": "completed"})
        elif kind == "function_call":
            out.append({"id": it.get("id") or new_id("fc_"), "type": "function_call", "call_id": it["call_id"],
                        "name": it["name"], "arguments": it["arguments"], "status": "completed"})
        elif kind == "function_call_output":
            out.append({"id": it.get("id") or new_id("fco_"), "type": "function_call_output",
                        "call_id": it["call_id"], "output": it["output"], "status": "completed"})
        else:
            out.append(dict(it, id=it.get("id") or new_id("rs_")))
    return out


def _text_of(content) -> str | list:
    if type(content) is str:
        return content
    parts = []
    images = False
    for p in content:
        t = p.get("type")
        if t == "input_image":
            images = True
            parts.append({"type": "image_url", "image_url": {"url": p["image_url"]}})
        else:
            parts.append({"type": "text", "text": p.get("text", p.get("refusal", ""))})
    if images:
        return parts
    return "".join(p["text"] for p in parts)


def to_messages(items: list) -> list:
    """Stored items (module rules) as chat messages."""
    msgs: list = []
    for it in items:
        kind = it.get("type", "message")
        if kind == "message":
            role = "system" if it["role"] == "developer" else it["role"]
            msgs.append({"role": role, "content": _text_of(it["content"])})
        elif kind == "function_call":
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}}
            last = msgs[-1] if msgs else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            msgs.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
        elif kind == "mcp_call":
            msgs.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": it["id"], "type": "function", "function": {"name": it["name"], "arguments": it["arguments"]}}]})
            msgs.append({"role": "tool", "tool_call_id": it["id"],
                         "content": it["output"] if it.get("error") is None else f"error: {it['error']}"})
    return msgs


def chat_request(body: dict, history: list, items: list) -> dict:
    """The chat completion request of a checked Responses ``body``: ``history`` (items
    of earlier turns) then ``items`` (this turn's input)."""
    msgs = []
    if body.get("instructions"):
        msgs.append({"role": "system", "content": body["instructions"]})
    msgs += to_messages(history)
    msgs += to_messages(items)
    chat: dict = {"model": body["model"], "messages": msgs}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for k in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(k) is not None:
            chat[k] = body[k]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = [t for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        chat["tools"] = [{"type": "function", "function": {
            k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}}
            for t in tools]
    tc = body.get("tool_choice")
    if tc is not None:
        chat["tool_choice"] = tc if type(tc) is str else {"type": "function", "function": {"name": tc["name"]}}
    fmt = (body.get("text") or {}).get("format")
    if fmt and fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt and fmt["type"] == "json_schema":
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    return chat


# -- the answer -------------------------------------------------------------------------


def message_item(text: str, iid: str | None = None, status: str = "completed") -> dict:
    return {"id": iid or new_id("msg_"), "type": "message", "status": status, "role": "assistant",
            "content": [text_part(text)]}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(text: str, iid: str | None = None) -> dict:
    return {"id": iid or new_id("rs_"), "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}


def call_item(call_id: str, name: str, arguments: str, iid: str | None = None, status: str = "completed") -> dict:
    return {"id": iid or new_id("fc_"), "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def output_of(message: dict) -> list:
    """A chat answer's message as output items (module rules)."""
    out = []
    reasoning = message.get("reasoning_content")
    if reasoning:
        out.append(reasoning_item(reasoning))
    content = message.get("content")
    if content or not message.get("tool_calls"):
        out.append(message_item(content or ""))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        out.append(call_item(call.get("id") or new_id("call_"), fn.get("name") or "", fn.get("arguments") or ""))
    return out


def usage_of(u) -> dict | None:
    """Chat usage as the Responses API's."""
    if type(u) is not dict:
        return None
    p, c = u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0}, "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": u.get("total_tokens") or p + c}


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def finish_status(finish_reason) -> tuple:
    """(status, incomplete_details) of a chat finish reason."""
    why = _INCOMPLETE.get(finish_reason)
    if why is None:
        return "completed", None
    return "incomplete", {"reason": why}


def response_object(body: dict, rid: str, created_at: int, status: str, output: list, usage=None,
                    incomplete=None, error=None, conversation: str | None = None, model: str | None = None) -> dict:
    """The Response object of a turn (its request ``body``, as checked)."""
    tools = body.get("tools") or []
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    reasoning = body.get("reasoning") or {}
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": status,
        "background": body.get("background") is True, "error": error, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": model or body["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store", True), "temperature": body.get("temperature"), "text": {"format": fmt},
        "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_p": body.get("top_p"),
        "truncation": "disabled", "usage": usage, "user": body.get("user"),
        "conversation": {"id": conversation} if conversation else None,
    }
