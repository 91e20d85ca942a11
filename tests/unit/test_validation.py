"""The request validators (smg/api/validate) on parsed bodies: the fault SMG reports
first, its code and param, and that valid bodies pass untouched."""
from __future__ import annotations

import copy

import orjson
import pytest

from smg.api import errors as api_errors
from smg.api import validate as V
from smg.api.validate._core import Bad, decode_fault

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MSG = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def chat(**kw):
    return dict(CHAT, **kw)


def verdict(v, body):
    r = v.check(body)
    return None if r is None else (r.status, r.code, r.param)


@pytest.mark.parametrize("body", [
    CHAT,
    chat(temperature=0, top_p=1, n=10, max_tokens=1, stream=True, stream_options={"include_usage": True}),
    chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}], tool_choice="required"),
    chat(tool_choice="auto"),
    chat(messages=[{"role": "system"}, {"role": "assistant", "content": None}, {"role": "user", "content": []}]),
    chat(stop=["a", "b", "c", "d"], logprobs=True, top_logprobs=20, top_k=-1, unknown={"x": 1}),
    chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
])
def test_valid_chat_bodies_pass_and_are_not_changed(body):
    before = copy.deepcopy(body)
    assert V.CHAT.check(body) is None
    assert body == before


@pytest.mark.parametrize("body, expect", [
    ({"messages": CHAT["messages"]}, (400, "missing_required_parameter", "model")),
    ({}, (400, "missing_required_parameter", "messages")),                   # declaration order
    (chat(model=None), (400, "invalid_type", "model")),
    (chat(messages=[]), (400, "empty_array", "messages")),
    (chat(messages=[{"content": "x"}]), (400, "missing_required_parameter", "messages[0].role")),
    (chat(messages=[{"role": "bogus"}]), (400, "invalid_value", "messages[0].role")),
    (chat(messages=[{"role": "user", "content": 5}]), (400, "invalid_type", "messages[0]")),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]),
     (400, "missing_required_parameter", "messages[0].id")),               # tagged: the path stops there
    (chat(tools=[{"type": "function", "function": {}}]), (400, "missing_required_parameter", "tools[0].function.name")),
    (chat(stream="yes"), (400, "invalid_type", "stream")),
    (chat(max_tokens="ten"), (400, "invalid_type", "max_tokens")),
    (chat(max_tokens=-1), (400, "integer_below_min_value", "max_tokens")),
    (chat(max_tokens=5_000_000_000), (400, "invalid_value", "max_tokens")),
    (chat(max_tokens=True), (400, "invalid_type", "max_tokens")),             # a boolean is no number
    (chat(temperature=-5), (400, "decimal_below_min_value", "temperature")),
    (chat(temperature=1e300), (400, "invalid_value", "temperature")),
    (chat(top_p=0), (400, "decimal_below_min_value", "top_p")),
    (chat(n=0), (400, "integer_below_min_value", "n")),
    (chat(stop=["a"] * 5), (400, "array_above_max_length", "stop")),
    (chat(logit_bias={"7": "x"}), (400, "invalid_type", "logit_bias.7")),
    (chat(stop_token_ids=[1, -1]), (400, "integer_below_min_value", "stop_token_ids[1]")),
    (chat(top_logprobs=2), (400, "top_logprobs_requires_logprobs", None)),
    (chat(stream_options={}), (400, "stream_options_requires_stream", None)),
    (chat(tool_choice="required"), (400, "tool_choice_requires_tools", None)),
    (chat(messages=[{"role": "root", "content": "x"}]), (400, "invalid_role", None)),
    # decoding faults come before field rules, field rules before cross-field rules
    (chat(temperature=-5, stream="yes"), (400, "invalid_type", "stream")),
    (chat(temperature=-5, stream_options={}), (400, "decimal_below_min_value", "temperature")),
    (chat(temperature=-5, n=0), (400, "integer_below_min_value", "n")),      # declaration order
    # the first wrong type in document order
    ({"stream": 1, "model": 5}, (400, "invalid_type", "stream")),
    ({"model": 5, "stream": 1}, (400, "invalid_type", "model")),
])
def test_chat_faults(body, expect):
    assert verdict(V.CHAT, body) == expect


def test_missing_field_message_names_the_object_it_is_missing_from():
    r = V.CHAT.check(chat(messages=[{"content": "x"}]))
    assert r.message.endswith("messages[0]: missing field `role`")


@pytest.mark.parametrize("body, expect", [
    ({"model": "m", "prompt": []}, (400, "prompt_empty", "prompt")),
    ({"model": "m", "prompt": [1, 2]}, (400, "invalid_type", "prompt")),
    ({"model": "m", "prompt": "x", "n": 129}, (400, "integer_above_max_value", "n")),
    ({"model": "m", "prompt": "x", "n": 128, "max_tokens": 0}, None),
    ({"model": "m", "prompt": "x", "min_tokens": 3, "max_tokens": 1}, (400, "min_tokens_exceeds_max", None)),
])
def test_completions(body, expect):
    assert verdict(V.COMPLETIONS, body) == expect


@pytest.mark.parametrize("body, expect", [
    (MSG, None),
    (dict(MSG, messages=[{"role": "user", "content": [{"type": "text", "text": "x", "extra": 1}]}]), None),
    ({"model": "m", "messages": MSG["messages"]}, (400, "missing_required_parameter", "max_tokens")),
    (dict(MSG, max_tokens=0), (400, "max_tokens_zero_not_relayed", "max_tokens")),
    (dict(MSG, messages=[]), (400, "empty_array", "messages")),
    (dict(MSG, messages=[{"role": "user", "content": [{"type": "bogus"}]}]),
     (400, "invalid_type", "messages[0].content")),
    (dict(MSG, system=[{"text": "x"}]), (400, "invalid_type", "system")),
    (dict(MSG, temperature=1.5), (400, "value_out_of_range", None)),
    (dict(MSG, thinking={"type": "enabled", "budget_tokens": 2000}), (400, "thinking_budget_exceeds_max_tokens", None)),
])
def test_anthropic_messages(body, expect):
    assert verdict(V.MESSAGES, body) == expect


def test_plain_routes_refuse_in_plain_text():
    r = V.EMBEDDINGS.check({"model": "m"})
    assert (r.status, r.plain) == (422, True) and "missing field `input`" in r.message
    assert V.EMBEDDINGS.check({"model": "m", "input": None}) is None       # any JSON value: the worker judges it
    assert V.GENERATE.check({"text": 5}).status == 422
    assert V.GENERATE.check({"input_ids": [[1, 2], [3]]}) is None
    assert V.RERANK_V1.check({"query": "q", "documents": [1]}).status == 422
    assert V.RERANK_V1.check({"query": "q", "documents": []}) is None
    assert verdict(V.RERANK, {"model": "m", "query": "q", "documents": []}) == (400, "invalid_value", "documents")


@pytest.mark.parametrize("value, ok", [
    (b"application/json", True), (b"application/json; charset=utf-8", True), (b"APPLICATION/JSON", True),
    (b"application/vnd.api+json", True), (b"text/json", False), (b"application/jsonx", False),
    (b"text/plain", False), (b"", False), (None, False),
])
def test_json_content_type(value, ok):
    assert V.json_content_type(value) is ok


def test_body_level_answers():
    assert (V.CHAT.bad_content_type.status, V.CHAT.bad_content_type.code) == (400, "json_parse_error")
    assert (V.EMBEDDINGS.bad_content_type.status, V.EMBEDDINGS.bad_content_type.plain) == (415, True)
    r = V.CHAT.not_object([1, 2])
    assert (r.status, r.code, r.param) == (400, "invalid_type", None) and "sequence" in r.message
    r = V.RERANK.not_object([1, 2])                  # an array stands for the fields in order
    assert (r.code, r.param) == ("invalid_type", "[0]")
    assert V.EMBEDDINGS.not_object(None).status == 422


def test_every_code_a_validator_gives_is_catalogued():
    bodies = [chat(messages=[]), chat(temperature=9), chat(top_p=0), chat(n=99), chat(n=-1), chat(stop=[""]),
              chat(stop=["a"] * 5), chat(verbosity="x"), {"model": "m", "prompt": []}, chat(top_logprobs=1)]
    for b in bodies:
        r = V.CHAT.check(b) if "messages" in b else V.COMPLETIONS.check(b)
        assert r.code in api_errors.CODES, r


def test_decode_fault_path_rendering():
    e = Bad("invalid_type", "x", ["name", "function", 0, "tools"])
    assert decode_fault(e).param == "tools[0].function.name"


def test_error_bodies():
    doc = orjson.loads(api_errors.error_body(api_errors.OPENAI, 400, "m", "invalid_type", "model"))
    assert doc == {"error": {"message": "m", "type": "invalid_request_error", "param": "model", "code": "invalid_type"}}
    doc = orjson.loads(api_errors.error_body(api_errors.OPENAI, 504, "m"))
    assert doc["error"]["code"] == "call_upstream_timeout" and doc["error"]["type"] == "server_error"
    doc = orjson.loads(api_errors.error_body(api_errors.ANTHROPIC, 404, "m", "model_not_found", rid=b"msg_1"))
    assert doc == {"type": "error", "error": {"type": "not_found_error", "message": "m"}, "request_id": "msg_1"}
    assert api_errors.code_header("unknown_url", 404) == (b"x-smg-error-code", b"unknown_url")
    assert api_errors.code_header("invalid_type", 400) is None
    assert api_errors.code_header("invalid_api_key", 401) is None


def test_every_code_the_gateway_answers_with_is_catalogued():
    """The codes written at the call sites (``reply_error(..., code=...)``,
    ``Reply(status, message, code)``, a filter's ``reply(...)``) are catalogue entries."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "smg"
    found = {}
    for path in root.rglob("*.py"):
        if "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name not in ("reply_error", "Reply", "reply"):
                continue
            codes = [k.value for k in node.keywords if k.arg == "code"]
            if name != "reply_error" and len(node.args) >= 3:
                codes.append(node.args[2])
            for c in codes:
                if isinstance(c, ast.Constant) and isinstance(c.value, str):
                    found.setdefault(c.value, f"{path.relative_to(root)}:{node.lineno}")
    missing = {c: where for c, where in found.items() if c not in api_errors.CODES}
    assert found and not missing
