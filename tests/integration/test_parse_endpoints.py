"""The parse endpoints through the running gateway: ``/parse/reasoning``,
``/parse/function_call`` and their ``/v1/parser/*`` aliases — answer shapes, refused
bodies, unknown parser names, and control-plane auth."""
from __future__ import annotations

import importlib.util
import json

import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig

from . import rawhttp

TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def call(port, method, path, body=b"", headers=()):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    extra = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
    raw = b"%s %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        method.encode(), path.encode(), len(body), extra, body)
    st, hdrs, data = rawhttp.request(port, raw, methods=[method])[0]
    if hdrs.get("content-type", "").startswith("text/plain"):
        return st, hdrs, data.decode()
    return st, hdrs, (json.loads(data) if data else None)


@pytest.fixture(scope="module")
def gw():
    with GatewayHarness(workers=[MockConfig(worker_id="w1")]) as h:
        yield h


@pytest.mark.parametrize("path", ["/parse/reasoning", "/v1/parser/reasoning"])
def test_reasoning_is_split_out(gw, path):
    st, hdrs, body = call(gw.port, "POST", path, {"text": "<think>plan ✓</think>answer",
                                                  "reasoning_parser": "qwen3"})
    assert st == 200 and hdrs["content-type"] == "application/json"
    assert body == {"normal_text": "answer", "reasoning_text": "plan ✓", "success": True}
    assert hdrs["x-request-id"]


def test_a_parser_that_starts_inside_reasoning(gw):
    st, _, body = call(gw.port, "POST", "/parse/reasoning", {"text": "plan</think>answer",
                                                             "reasoning_parser": "deepseek_r1"})
    assert (st, body) == (200, {"normal_text": "answer", "reasoning_text": "plan", "success": True})


def test_unknown_fields_are_tolerated(gw):
    st, _, body = call(gw.port, "POST", "/parse/reasoning", {"text": "x", "reasoning_parser": "passthrough",
                                                             "extra": 1})
    assert (st, body) == (200, {"normal_text": "x", "reasoning_text": "", "success": True})


@pytest.mark.parametrize("path,kind,field", [("/parse/reasoning", "reasoning", "reasoning_parser"),
                                             ("/parse/function_call", "tool", "tool_call_parser"),
                                             ("/v1/parser/tool", "tool", "tool_call_parser")])
def test_an_unknown_parser_name_is_a_400(gw, path, kind, field):
    st, _, body = call(gw.port, "POST", path, {"text": "x", field: "no-such", "tools": []})
    assert st == 400
    assert body == {"error": f"Unknown {kind} parser: no-such", "success": False}


DECODE = "Failed to deserialize the JSON body into the target type: "


@pytest.mark.parametrize("path,doc,message", [
    ("/parse/reasoning", {"text": "a"}, "missing field `reasoning_parser`"),
    ("/parse/reasoning", {"reasoning_parser": "qwen3"}, "missing field `text`"),
    ("/parse/reasoning", {"text": 5, "reasoning_parser": "qwen3"},
     "text: invalid type: integer `5`, expected a string"),
    ("/parse/reasoning", {"text": "a", "reasoning_parser": None},
     "reasoning_parser: invalid type: null, expected a string"),
    ("/parse/reasoning", "x", 'invalid type: string "x", expected struct SeparateReasoningRequest'),
    ("/parse/function_call", 5, "invalid type: integer `5`, expected struct ParseFunctionCallRequest"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json"}, "missing field `tools`"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json", "tools": None},
     "tools: invalid type: null, expected a sequence"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json", "tools": "a"},
     'tools: invalid type: string "a", expected a sequence'),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json", "tools": [5]},
     "tools[0]: invalid type: integer `5`, expected struct Tool"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json", "tools": [{"a": 1}]},
     "tools[0]: missing field `type`"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json", "tools": [{"type": "function"}]},
     "tools[0]: missing field `function`"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json",
                              "tools": [{"type": "function", "function": {}}]},
     "tools[0].function: missing field `name`"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json",
                              "tools": [{"type": "function", "function": 5}]},
     "tools[0].function: invalid type: integer `5`, expected struct Function"),
    ("/parse/function_call", {"text": "x", "tool_call_parser": "json",
                              "tools": [{"type": "function", "function": {"name": "f", "description": 5}}]},
     "tools[0].function.description: invalid type: integer `5`, expected a string"),
    ("/v1/parser/tool", {"text": "x", "tool_call_parser": 5, "tools": []},
     "tool_call_parser: invalid type: integer `5`, expected a string"),
])
def test_bad_bodies_are_a_plain_422_naming_the_field(gw, path, doc, message):
    st, hdrs, body = call(gw.port, "POST", path, doc)
    assert (st, hdrs["content-type"]) == (422, "text/plain; charset=utf-8"), body
    assert body == DECODE + message


def test_invalid_json_is_a_plain_400(gw):
    st, hdrs, body = call(gw.port, "POST", "/parse/reasoning", b"{nope")
    assert st == 400 and hdrs["content-type"].startswith("text/plain")
    assert body.startswith("Failed to parse the request body as JSON: ")


def test_a_non_json_content_type_is_a_415(gw):
    raw = (b"POST /parse/reasoning HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
           b"\r\n{}")
    st, _, data = rawhttp.request(gw.port, raw, methods=["POST"])[0]
    assert (st, data) == (415, b"Expected request with `Content-Type: application/json`")


def test_only_post_is_served(gw):
    st, hdrs, _ = call(gw.port, "GET", "/parse/reasoning")
    assert st == 405 and hdrs["allow"] == "POST"


def _needs_tool_registry():
    if importlib.util.find_spec("smg.parsers.tools.registry") is None:
        pytest.skip("the tool-parser registry is not built yet")


def test_function_call_with_passthrough_keeps_the_text(gw):
    _needs_tool_registry()
    st, _, body = call(gw.port, "POST", "/parse/function_call", {"text": "no calls here",
                                                                 "tool_call_parser": "passthrough",
                                                                 "tools": TOOLS})
    assert (st, body) == (200, {"remaining_text": "no calls here", "tool_calls": [], "success": True})


def test_function_call_shape(gw):
    _needs_tool_registry()
    text = 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    st, _, body = call(gw.port, "POST", "/v1/parser/tool", {"text": text, "tool_call_parser": "qwen",
                                                            "tools": TOOLS})
    assert st == 200 and body["success"] is True
    assert body["remaining_text"].strip() == "Let me check."
    assert len(body["tool_calls"]) == 1
    call0 = body["tool_calls"][0]
    assert set(call0) == {"function"} and call0["function"]["name"] == "get_weather"
    assert json.loads(call0["function"]["arguments"]) == {"city": "Paris"}


def test_they_are_admin_routes():
    with GatewayHarness(workers=[MockConfig(worker_id="w1")], api_key="data-secret",
                        control_plane_api_keys=["ops:Ops:admin:admin-secret"]) as h:
        doc = {"text": "<think>a</think>b", "reasoning_parser": "qwen3"}
        assert call(h.port, "POST", "/parse/reasoning", doc)[0] == 401
        assert call(h.port, "POST", "/parse/reasoning", doc, [("authorization", "Bearer data-secret")])[0] == 401
        st, _, body = call(h.port, "POST", "/parse/reasoning", doc, [("authorization", "Bearer admin-secret")])
        assert (st, body["reasoning_text"]) == (200, "a")


def test_they_move_to_the_control_plane_listener():
    with GatewayHarness(workers=[MockConfig(worker_id="w1")], control_plane_port=0,
                        control_plane_api_keys=["ops:Ops:admin:admin-secret"]) as h:
        doc = {"text": "<think>a</think>b", "reasoning_parser": "qwen3"}
        auth = [("authorization", "Bearer admin-secret")]
        assert call(h.port, "POST", "/parse/reasoning", doc, auth)[0] == 404
        st, _, body = call(h.gw.control_port, "POST", "/parse/reasoning", doc, auth)
        assert (st, body["normal_text"]) == (200, "b")
