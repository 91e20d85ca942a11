"""The ``--mcp-config-path`` file format (smg/mcp/config.py): SMG's keys, ``${ENV}``
substitution, refusals by key path, the policy's order and the argument mapping."""
from __future__ import annotations

import pytest

from smg.errors import ConfigError
from smg.mcp.config import McpConfig, parse

YAML = """
servers:
  - name: local
    protocol: stdio
    command: python
    args: [-m, smg.testing.mcp_server, --stdio]
    envs: {A: "${HOME_X}"}
  - name: remote
    protocol: streamable
    url: http://127.0.0.1:9/mcp
    token: ${TOKEN}
    headers: {X-Key: k}
    required: true
    tools:
      get_weather:
        alias: weather
        arg_mapping:
          renames: {town: city}
          defaults: {units: metric}
          overrides: {lang: en}
inventory: {enable_refresh: false, tool_ttl: 5}
policy:
  default: deny
  servers:
    local: {trust_level: trusted}
    remote: {trust_level: standard, default: allow}
  tools:
    "remote:boom": {deny_with_reason: "boom is off"}
"""


def test_a_full_file():
    c = parse(YAML, env={"TOKEN": "t0k", "HOME_X": "/h"})
    local, remote = c.servers
    assert (local.protocol, local.command, local.args, local.envs) == (
        "stdio", "python", ["-m", "smg.testing.mcp_server", "--stdio"], {"A": "/h"})
    assert remote.http_headers() == {"X-Key": "k", "Authorization": "Bearer t0k"} and remote.required
    t = remote.tools["get_weather"]
    assert t.alias == "weather"
    assert t.arguments({"town": "Oslo", "lang": "fr"}) == {"city": "Oslo", "units": "metric", "lang": "en"}
    assert t.arguments({"town": "Oslo", "units": "imperial"})["units"] == "imperial"
    assert (c.enable_refresh, c.tool_ttl, c.refresh_interval, c.refresh_on_error) == (False, 5, 60, True)


def test_policy_order():
    p = parse(YAML, env={"TOKEN": "t", "HOME_X": "h"}).policy
    assert p.decide("remote", "boom") == "boom is off"           # the tool's entry first
    assert p.decide("remote", "add") == "allow"                  # the server's default
    assert p.decide("local", "anything") == "allow"              # trusted
    assert "denied" in p.decide("other", "x")                    # policy.default
    q = parse("servers: []\npolicy: {servers: {s: {trust_level: untrusted}}}").policy
    assert q.decide("s", "write") != "allow" and q.decide("s", "read", read_only=True) == "allow"


def test_env_substitution_and_escape():
    c = parse("servers:\n- {name: a, protocol: sse, url: 'http://h/${P}', headers: {X: '$${LIT}'}}",
              env={"P": "sse"})
    assert c.servers[0].url == "http://h/sse" and c.servers[0].headers == {"X": "${LIT}"}
    with pytest.raises(ConfigError) as e:
        parse(YAML, env={"HOME_X": "h"})
    assert "TOKEN" in str(e.value) and "servers[1].token" in str(e.value)


def test_json_is_read_too():
    c = parse('{"servers": [{"name": "a", "protocol": "streamable", "url": "http://h/mcp"}]}')
    assert c.servers[0].name == "a" and c.policy.decide("a", "t") == "allow"


@pytest.mark.parametrize("text, where", [
    ("servers: [{name: a, protocol: ws, url: 'http://h'}]", "servers[0].protocol"),
    ("servers: [{name: a, protocol: sse}]", "servers[0].url"),
    ("servers: [{name: a, protocol: stdio}]", "servers[0].command"),
    ("servers: [{name: a, protocol: stdio, command: x, url: 'http://h'}]", "servers[0].url"),
    ("servers: [{name: a, protocol: sse, url: 'http://h', colour: red}]", "servers[0].colour"),
    ("servers: [{name: a, protocol: sse, url: 'http://h'}, {name: a, protocol: sse, url: 'http://g'}]", "twice"),
    ("servers: [{name: a, protocol: sse, url: 'http://h', builtin_type: web_search_preview}]",
     "servers[0].builtin_type: is not supported yet"),
    ("servers: [{name: a, protocol: sse, url: 'http://h', tools: {t: {response_format: web_search_call}}}]",
     "servers[0].tools.t.response_format"),
    ("servers: []\npool: {max_connections: 3}", "(top).pool: is not supported yet"),
    ("servers: []\npolicy: {default: maybe}", "policy.default"),
    ("servers: []\ninventory: {tool_ttl: -1}", "inventory.tool_ttl"),
    ("servers: [", "not valid YAML"),
])
def test_refusals_name_the_key(text, where):
    with pytest.raises(ConfigError) as e:
        parse(text, env={})
    assert e.value.key == "--mcp-config-path" and where in str(e.value)


def test_empty_file_is_no_servers():
    assert isinstance(parse(""), McpConfig) and parse("").servers == []
