"""``--mcp-config-path`` end to end: the gateway starts with two configured MCP servers,
real ones built with the ``mcp`` SDK (smg/testing/mcp_server.py): ``local`` over stdio
(the gateway spawns it) and ``remote`` over streamable HTTP on a free loopback port.
Requests use them by ``server_label`` or all of them with ``X-SMG-MCP: enabled``; the
configuration's aliases, argument mapping and policy apply; the ``smg_mcp_*`` and
``smg_db_*`` families count what happened. The model is the scripted chat worker of
test_responses_api.py (it calls ``get_weather`` with ``{"city": "Paris"}`` when offered
tools)."""
from __future__ import annotations

import json
import sys

import httpx
import pytest
from openai.types.responses import Response
from prometheus_client.parser import text_string_to_metric_families

from smg.errors import ConfigError
from smg.testing.datastores import free_port
from smg.testing.harness import GatewayHarness
from tests.integration.test_responses_api import MODEL
from tests.integration.test_responses_mcp import chats, fleet, mcp_url  # noqa: F401 - fixtures
from tests.integration.test_responses_mcp_stream import events

pytest.importorskip("mcp")

CONFIG = """
servers:
  - name: local
    protocol: stdio
    command: {python}
    args: [-m, smg.testing.mcp_server, --stdio]
    required: true
    tools:
      get_weather:
        arg_mapping: {{overrides: {{city: Rome}}}}
  - name: remote
    protocol: streamable
    url: ${{REMOTE_MCP_URL}}
    tools:
      add: {{alias: plus}}
inventory: {{enable_refresh: false}}
policy:
  tools:
    "remote:get_weather": {{deny_with_reason: "remote weather is off"}}
"""


@pytest.fixture(scope="module")
def gw(fleet, mcp_url, tmp_path_factory, monkeypatch_module):
    path = tmp_path_factory.mktemp("mcpcfg") / "mcp.yaml"
    path.write_text(CONFIG.format(python=sys.executable))
    monkeypatch_module.setenv("REMOTE_MCP_URL", mcp_url)
    return fleet.gateway(mcp_config_path=str(path))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def create(gw, body: dict, headers=None) -> Response:
    r = httpx.post(gw.url + "/v1/responses", json={"model": MODEL, **body}, headers=headers or {}, timeout=60)
    assert r.status_code == 200, r.text
    return Response.model_validate(r.json())


def scrape(gw) -> dict:
    text = httpx.get(gw.metrics_url, timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(m: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in m.items() if n == name and labels.items() <= dict(ls).items())


def test_header_offers_every_configured_server(gw, fleet):
    r = create(gw, {"input": "weather in Paris?"}, {"X-SMG-MCP": "enabled"})
    assert [(o.type, getattr(o, "server_label", None)) for o in r.output] == [
        ("mcp_list_tools", "local"), ("mcp_list_tools", "remote"), ("mcp_call", "local"), ("message", None)]
    assert {t.name for t in r.output[1].tools} == {"get_weather", "plus", "boom"}   # the alias is shown
    call = r.output[2]
    # the configured override replaced the model's argument; the item shows the model's
    assert json.loads(call.arguments) == {"city": "Paris"} and call.output == "sunny in Rome"
    assert r.output_text == "echo: sunny in Rome"
    first, second = chats(fleet, 2)
    assert sorted(t["function"]["name"] for t in first["tools"]) == sorted(
        ["get_weather", "add", "boom", "get_weather", "plus", "boom"])
    assert second["messages"][-1]["content"] == "sunny in Rome"


def test_no_header_no_configured_tools(gw, fleet):
    r = create(gw, {"input": "hello"})
    assert [o.type for o in r.output] == ["message"]
    assert "tools" not in chats(fleet, 1)[0]


def test_a_request_tool_names_one_configured_server_and_the_policy_denies(gw):
    r = create(gw, {"input": "weather?", "tools": [{"type": "mcp", "server_label": "remote"}]})
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "message"]
    call = r.output[1]
    assert call.server_label == "remote" and call.status == "failed" and call.output is None
    assert call.error.type == "http_error" and call.error.code == 403 and call.error.message == "remote weather is off"
    assert r.output_text == "echo: error: remote weather is off"


def test_approval_can_be_asked_for_a_configured_server(gw):
    r = create(gw, {"input": "weather?", "tools": [{"type": "mcp", "server_label": "local",
                                                    "require_approval": "always"}]})
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_approval_request"]
    bad = httpx.post(gw.url + "/v1/responses", timeout=10, json={
        "model": MODEL, "input": "x", "tools": [{"type": "mcp", "server_label": "local", "headers": {"a": "b"}}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tools[0].headers"


def test_streamed_turn_over_stdio(gw):
    evs = events(gw, {"input": "weather?", "tools": [{"type": "mcp", "server_label": "local"}]})
    kinds = [e["type"] for e in evs]
    assert kinds[-1] == "response.completed" and "response.mcp_call.completed" in kinds
    final = Response.model_validate(evs[-1]["response"])
    assert final.output[1].output == "sunny in Rome" and final.output_text == "echo: sunny in Rome"


def test_metric_families(gw, fleet):
    create(gw, {"input": "weather?", "tools": [{"type": "mcp", "server_label": "local"}]})
    m = scrape(gw)
    assert total(m, "smg_mcp_servers_active") == 2
    assert total(m, "smg_mcp_tool_calls_total", tool_name="get_weather", result="success", model=MODEL) >= 1
    assert total(m, "smg_mcp_tool_calls_total", tool_name="get_weather", result="error") >= 1  # the denial
    assert total(m, "smg_mcp_tool_duration_seconds_count", tool_name="get_weather") >= 2
    assert total(m, "smg_mcp_tool_iterations_total", model=MODEL) >= 1
    assert total(m, "smg_db_operations_total", storage_type="memory", operation="put_response",
                 result="success") >= 1
    assert total(m, "smg_db_operation_duration_seconds_count", storage_type="memory",
                 operation="put_response") >= 1
    assert total(m, "smg_db_items_stored", storage_type="memory") >= 1


def test_families_only_with_the_feature(fleet):
    plain = fleet.gateway()
    try:
        names = {n for n, _ in scrape(plain)}
        assert not any(n.startswith(("smg_mcp_", "smg_db_")) for n in names)   # the store not used yet
        r = httpx.post(plain.url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=10)
        assert r.status_code == 200
        m = scrape(plain)
        assert total(m, "smg_db_operations_total", operation="put_response", result="success") == 1
        assert total(m, "smg_db_items_stored", storage_type="memory") >= 1
        assert not any(n.startswith("smg_mcp_") for n, _ in m)   # no MCP call, no configured server
    finally:
        fleet.harnesses.remove(plain)
        plain.__exit__(None, None, None)


def test_required_server_unreachable_stops_start_up(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"servers": [{"name": "gone", "protocol": "streamable", "required": True,
                                             "url": f"http://127.0.0.1:{free_port()}/mcp"}]}))
    with pytest.raises(ConfigError) as e:
        GatewayHarness(workers=[], mcp_config_path=str(path)).__enter__()
    assert e.value.key == "--mcp-config-path" and "'gone'" in str(e.value)


def test_optional_server_unreachable_is_a_424_on_use(fleet, tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"servers": [{"name": "gone", "protocol": "streamable",
                                             "url": f"http://127.0.0.1:{free_port()}/mcp"}]}))
    h = fleet.gateway(mcp_config_path=str(path))
    try:
        assert total(scrape(h), "smg_mcp_servers_active") == 0
        r = httpx.post(h.url + "/v1/responses", timeout=30, json={
            "model": MODEL, "input": "x", "tools": [{"type": "mcp", "server_label": "gone"}]})
        assert r.status_code == 424 and r.json()["error"]["code"] == "mcp_list_tools_failed"
    finally:
        fleet.harnesses.remove(h)
        h.__exit__(None, None, None)
