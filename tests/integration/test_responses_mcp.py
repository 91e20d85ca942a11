"""The MCP tool loop of the Responses API end to end: the gateway in front of a chat
worker whose model calls ``get_weather`` when it is offered tools, and a real MCP server
(smg/testing/mcp_server.py, the official ``mcp`` SDK over streamable HTTP) started
here on a free loopback port. The ``openai`` SDK is the client; the output items are
validated with its types."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import openai
import pytest
from openai.types.responses import Response

from smg.testing.datastores import _wait_port, free_port
from tests.helpers import wait_for
from tests.integration.recording_worker import MODEL, Fleet
from tests.integration.test_responses_api import client, script

pytest.importorskip("mcp")


def start_mcp(port: int, log: str):
    proc = subprocess.Popen([sys.executable, "-m", "smg.testing.mcp_server", "--port", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    _wait_port(port, proc, "mcp server", log)
    return proc


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory):
    port = free_port()
    proc = start_mcp(port, str(tmp_path_factory.mktemp("mcp") / "log"))
    yield f"http://127.0.0.1:{port}/mcp"
    proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def fleet():
    with Fleet([script]) as f:
        yield f


@pytest.fixture(scope="module")
def gw(fleet):
    return fleet.gateway()


def tool(url: str, **kw) -> dict:
    return {"type": "mcp", "server_label": "weather", "server_url": url, **kw}


def chats(fleet, n: int) -> list:
    return [json.loads(r.body) for r in fleet.workers[0].requests[-n:]]


def test_the_loop_calls_the_tool_and_answers(gw, fleet, mcp_url):
    r = client(gw).responses.create(model=MODEL, input="weather in Paris?",
                                    tools=[tool(mcp_url, require_approval="never")])
    Response.model_validate(r.model_dump(mode="json", exclude_unset=True))
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "message"]
    listed = r.output[0]
    assert listed.server_label == "weather" and {t.name for t in listed.tools} == {"get_weather", "add", "boom"}
    call = r.output[1]
    assert (call.name, json.loads(call.arguments), call.output, call.error) == (
        "get_weather", {"city": "Paris"}, "sunny in Paris", None)
    assert r.output_text == "echo: sunny in Paris" and r.status == "completed"
    first, second = chats(fleet, 2)
    assert {t["function"]["name"] for t in first["tools"]} == {"get_weather", "add", "boom"}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["content"] == "sunny in Paris"


def test_allowed_tools_and_non_mcp_calls_go_back_to_the_client(gw, mcp_url):
    r = client(gw).responses.create(model=MODEL, input="weather?",
                                    tools=[tool(mcp_url, require_approval="never", allowed_tools=["add"])])
    assert [t.name for t in r.output[0].tools] == ["add"]
    # the model's get_weather is no MCP tool of this request: a function call for the client
    assert [o.type for o in r.output] == ["mcp_list_tools", "function_call"]


def test_approval_request_then_approved_call(gw, fleet, mcp_url):
    c = client(gw)
    r1 = c.responses.create(model=MODEL, input="weather in Paris?", tools=[tool(mcp_url)])
    assert [o.type for o in r1.output] == ["mcp_list_tools", "mcp_approval_request"]
    req = r1.output[1]
    assert req.name == "get_weather" and req.server_label == "weather"
    Response.model_validate(r1.model_dump(mode="json", exclude_unset=True))
    r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[tool(mcp_url)],
                            input=[{"type": "mcp_approval_response", "approval_request_id": req.id,
                                    "approve": True}])
    assert [o.type for o in r2.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert r2.output[1].output == "sunny in Paris" and r2.output_text == "echo: sunny in Paris"


def test_iteration_cap(gw, fleet, mcp_url):
    r = client(gw).responses.create(model=MODEL, input="call forever", max_tool_calls=2,
                                    tools=[tool(mcp_url, require_approval="never")])
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_tool_calls"
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "mcp_call"]


def while_mcp_dies(fleet, tmp_path, call):
    """``call(url)``'s result, the MCP server at ``url`` killed while the model (held
    1 s by the worker) is thinking after the loop has listed its tools."""
    port = free_port()
    proc = start_mcp(port, str(tmp_path / "log"))
    url = f"http://127.0.0.1:{port}/mcp"
    seen = len(fleet.workers[0].requests)
    fleet.workers[0].delay = 1.0
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", call(url)))
    t.start()
    try:
        assert wait_for(lambda: len(fleet.workers[0].requests) > seen, 10)
        proc.kill()
        proc.wait(10)
        t.join(60)
    finally:
        fleet.workers[0].delay = 0.0
    return out["r"]


def test_server_down_or_dying_mid_loop(gw, fleet, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    r = httpx.post(gw.url + "/v1/responses", json={"model": MODEL, "input": "x", "tools": [tool(dead)]}, timeout=30)
    assert r.status_code == 424 and r.json()["error"]["code"] == "mcp_list_tools_failed"
    r = while_mcp_dies(fleet, tmp_path, lambda url: client(gw).responses.create(
        model=MODEL, input="weather?", tools=[tool(url, require_approval="never")]))
    call = r.output[1]
    assert call.type == "mcp_call" and call.status == "failed" and call.output is None
    # the published schema's error object: the gateway's view of the failed transport
    Response.model_validate(r.model_dump(mode="json", exclude_unset=True))
    assert call.error.type == "http_error" and call.error.code == 502 and "MCP server" in call.error.message
    assert r.output_text.startswith("echo: error: ")


@pytest.mark.parametrize("extra,param", [
    ({"max_tool_calls": 0}, "max_tool_calls"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].server_url"),
    ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "http://h/mcp", "require_approval": "maybe"}]},
     "tools[0].require_approval"),
])
def test_bad_mcp_requests(gw, mcp_url, extra, param):
    body = {"model": MODEL, "input": "x", "tools": [tool(mcp_url)], **extra}
    r = httpx.post(gw.url + "/v1/responses", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
