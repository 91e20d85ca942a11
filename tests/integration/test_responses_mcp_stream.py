"""The MCP tool loop on a streamed ``/v1/responses`` turn: one SSE stream over the loop's
model calls, with the MCP events (``response.mcp_list_tools.*``, ``response.mcp_call.*``,
``response.mcp_call_arguments.*``) in order, every event parsed by the ``openai`` SDK's
own types, and the final Response equal to what retrieve gives back. A real MCP server
(smg/testing/mcp_server.py, streamable HTTP) on a free loopback port, the gateway in
front of the scripted chat worker of test_responses_api.py."""
from __future__ import annotations

import pytest
from openai.types.responses import Response

from tests.integration.test_responses_api import MODEL, client, sse_events
from tests.integration.test_responses_mcp import chats, fleet, gw, mcp_url, tool, while_mcp_dies  # noqa: F401

pytest.importorskip("mcp")


def events(gw, body: dict) -> list:
    return sse_events(gw, body, timeout=30, view=_schema_view)


def _schema_view(ev: dict) -> dict:
    """The event as the published schema sees it: SMG's incomplete reason
    ``max_tool_calls`` is not among the schema's reasons, so it is checked by the
    tests themselves and validated here as ``max_output_tokens``."""
    r = ev.get("response")
    if r and (r.get("incomplete_details") or {}).get("reason") == "max_tool_calls":
        return dict(ev, response=dict(r, incomplete_details={"reason": "max_output_tokens"}))
    return ev


def test_streamed_loop_events_in_order(gw, fleet, mcp_url):
    evs = events(gw, {"input": "weather in Paris?", "tools": [tool(mcp_url, require_approval="never")]})
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    kinds = [e["type"] for e in evs]
    assert kinds[:6] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
                         "response.output_item.done"]
    call = kinds.index("response.mcp_call.in_progress")
    assert kinds[call - 1] == "response.output_item.added" and evs[call - 1]["item"]["type"] == "mcp_call"
    deltas = [e["delta"] for e in evs if e["type"] == "response.mcp_call_arguments.delta"]
    assert "".join(deltas) == '{"city":"Paris"}'
    done = kinds.index("response.mcp_call_arguments.done")
    assert kinds[done + 1:done + 3] == ["response.mcp_call.completed", "response.output_item.done"]
    item = evs[done + 2]["item"]
    assert (item["type"], item["output"], item["error"], item["status"]) == (
        "mcp_call", "sunny in Paris", None, "completed")
    # the model's second answer continues the same stream
    text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    assert text == "echo: sunny in Paris"
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    final = Response.model_validate(evs[-1]["response"])
    assert [o.type for o in final.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert final.output[1].output == "sunny in Paris" and final.output_text == "echo: sunny in Paris"
    # the output indexes name the final object's items
    assert all(final.output[e["output_index"]].id == e["item"]["id"]
               for e in evs if e["type"] == "response.output_item.done")
    stored = client(gw).responses.retrieve(final.id)
    assert stored.model_dump() == final.model_dump()
    first, second = chats(fleet, 2)
    assert first["stream"] is True and second["stream"] is True
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"}


def test_streamed_approval_request(gw, mcp_url):
    evs = events(gw, {"input": "weather in Paris?", "tools": [tool(mcp_url)]})
    kinds = [e["type"] for e in evs]
    assert "response.mcp_call.in_progress" not in kinds
    added = [e["item"] for e in evs if e["type"] == "response.output_item.added"]
    assert [i["type"] for i in added] == ["mcp_list_tools", "mcp_approval_request"]
    assert added[1]["arguments"] == '{"city":"Paris"}' and added[1]["name"] == "get_weather"
    final = Response.model_validate(evs[-1]["response"])
    assert kinds[-1] == "response.completed"
    assert [o.type for o in final.output] == ["mcp_list_tools", "mcp_approval_request"]
    # approved in the next (streamed) turn: the call runs before the model is asked
    evs2 = events(gw, {"previous_response_id": final.id, "tools": [tool(mcp_url)],
                       "input": [{"type": "mcp_approval_response", "approval_request_id": final.output[1].id,
                                  "approve": True}]})
    final2 = Response.model_validate(evs2[-1]["response"])
    assert [o.type for o in final2.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert final2.output[1].output == "sunny in Paris"
    kinds2 = [e["type"] for e in evs2]
    assert "response.mcp_call.completed" in kinds2 and kinds2[-1] == "response.completed"


def test_streamed_iteration_cap(gw, mcp_url):
    evs = events(gw, {"input": "call forever", "max_tool_calls": 2,
                      "tools": [tool(mcp_url, require_approval="never")]})
    assert evs[-1]["type"] == "response.incomplete"
    assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_tool_calls"}
    final = Response.model_validate(_schema_view(evs[-1])["response"])
    calls = [o for o in final.output if o.type == "mcp_call"]
    # two calls ran; the third the model asked for is shown, not run
    assert [c.status for c in calls] == ["completed", "completed", "incomplete"]
    assert calls[2].output is None and calls[2].error is None
    assert sum(e["type"] == "response.created" for e in evs) == 1


def test_streamed_server_dying_mid_loop(gw, fleet, tmp_path):
    evs = while_mcp_dies(fleet, tmp_path, lambda url: events(
        gw, {"input": "weather?", "tools": [tool(url, require_approval="never")]}))
    assert [e["type"] for e in evs].count("response.mcp_call.failed") == 1
    final = Response.model_validate(evs[-1]["response"])
    call = final.output[1]
    assert call.type == "mcp_call" and call.status == "failed" and call.output is None
    assert call.error.type == "http_error" and call.error.code == 502 and "MCP server" in call.error.message
    assert final.output_text.startswith("echo: error: the MCP server failed")
    assert evs[-1]["type"] == "response.completed"
