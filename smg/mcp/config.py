"""The ``--mcp-config-path`` file: YAML (or JSON, which YAML reads too) in SMG's format,
read and checked into plain objects; no I/O beyond reading the file.

Format::

    servers:
      - name: tools                       # the server's label (unique)
        protocol: streamable              # stdio | sse | streamable
        url: http://127.0.0.1:8765/mcp    # sse / streamable
        token: ${TOOLS_TOKEN}             # sent as "Authorization: Bearer ..."
        headers: {X-Api-Key: abc}
        command: python                   # stdio: command, args, envs
        args: [-m, my_server]
        envs: {KEY: value}
        required: false                   # true: start-up fails when it cannot be reached
        tools:
          get_weather:
            alias: weather                # the name the model sees
            response_format: passthrough
            arg_mapping:
              renames: {town: city}       # the model's name -> the server's
              defaults: {units: metric}   # added when the model leaves them out
              overrides: {units: metric}  # always set
    inventory: {enable_refresh: true, tool_ttl: 300, refresh_interval: 60, refresh_on_error: true}
    policy:
      default: allow                      # allow | deny | {deny_with_reason: "..."}
      servers: {tools: {trust_level: standard, default: allow}}
      tools: {"tools:boom": deny}         # qualified server:tool

Rules:
- ``${NAME}`` anywhere in a string value is replaced by the environment variable
  (an unset variable is an error naming it; ``$${`` writes a literal ``${``).
- Every key is known: an unknown key, a wrong type or a missing field stops start-up
  with a ``ConfigError`` naming the flag and the key's path. Features of the format
  smg does not have (``proxy``, ``pool``, ``warmup``, ``builtin_type``,
  ``builtin_tool_name``, ``internal``, response formats other than ``passthrough``)
  are refused by name, not ignored.
- Policy order for a call of ``server:tool``: the ``tools`` entry, else the server's
  trust level (``trusted`` allows all; ``standard`` its ``default``; ``untrusted`` and
  ``sandboxed`` deny unless the tool's annotations say ``readOnlyHint``), else
  ``policy.default``.
"""
from __future__ import annotations

import os
import re

from smg.errors import ConfigError

FLAG = "--mcp-config-path"
PROTOCOLS = ("stdio", "sse", "streamable")
TRUST = ("trusted", "standard", "untrusted", "sandboxed")
_NOT_YET = ("proxy", "pool", "warmup")
_SERVER_NOT_YET = ("builtin_type", "builtin_tool_name", "internal", "proxy")
_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _bad(path: str, msg: str) -> ConfigError:
    return ConfigError(FLAG, f"{path}: {msg}")


def substitute(value, path: str = "", env=os.environ):
    """``value`` with ``${NAME}`` replaced in every string (module rules)."""
    if type(value) is str:
        def rep(m):
            if m.group(1) is None:
                return "${"
            name = m.group(1)
            if name not in env:
                raise _bad(path or "(top)", f"environment variable {name} is not set")
            return env[name]
        return _ENV.sub(rep, value)
    if type(value) is list:
        return [substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if type(value) is dict:
        return {k: substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    return value


def _keys(d, path: str, allowed: tuple, not_yet: tuple = ()) -> dict:
    if type(d) is not dict:
        raise _bad(path, "must be a mapping")
    for k in d:
        if k in not_yet:
            raise _bad(f"{path}.{k}", "is not supported yet")
        if k not in allowed:
            raise _bad(f"{path}.{k}", "is not a known key")
    return d


def _str(d: dict, key: str, path: str, required: bool = False):
    v = d.get(key)
    if v is None:
        if required:
            raise _bad(f"{path}.{key}", "is required")
        return None
    if type(v) is not str or not v:
        raise _bad(f"{path}.{key}", "must be a non-empty string")
    return v


def _str_map(d: dict, key: str, path: str) -> dict:
    v = d.get(key) or {}
    if type(v) is not dict or not all(type(k) is str and type(x) is str for k, x in v.items()):
        raise _bad(f"{path}.{key}", "must map names to strings")
    return dict(v)


def _num(d: dict, key: str, path: str, default):
    v = d.get(key, default)
    if type(v) not in (int, float) or v < 0:
        raise _bad(f"{path}.{key}", "must be a non-negative number")
    return v


def _bool(d: dict, key: str, path: str, default: bool) -> bool:
    v = d.get(key, default)
    if type(v) is not bool:
        raise _bad(f"{path}.{key}", "must be true or false")
    return v


class ToolConfig:
    __slots__ = ("name", "alias", "renames", "defaults", "overrides")

    def __init__(self, name: str, d, path: str) -> None:
        d = _keys(d or {}, path, ("alias", "response_format", "arg_mapping"))
        self.name = name
        self.alias = _str(d, "alias", path)
        fmt = d.get("response_format", "passthrough")
        if fmt != "passthrough":
            raise _bad(f"{path}.response_format", f"{fmt!r} is not supported yet (passthrough)")
        am = _keys(d.get("arg_mapping") or {}, f"{path}.arg_mapping", ("renames", "defaults", "overrides"))
        self.renames = _str_map(am, "renames", f"{path}.arg_mapping")
        for key in ("defaults", "overrides"):
            v = am.get(key) or {}
            if type(v) is not dict:
                raise _bad(f"{path}.arg_mapping.{key}", "must be a mapping")
        self.defaults = dict(am.get("defaults") or {})
        self.overrides = dict(am.get("overrides") or {})

    def arguments(self, args: dict) -> dict:
        """The server's arguments for the model's ``args``: renamed, defaults added,
        overrides set."""
        out = {self.renames.get(k, k): v for k, v in args.items()}
        for k, v in self.defaults.items():
            out.setdefault(k, v)
        out.update(self.overrides)
        return out


class ServerConfig:
    __slots__ = ("name", "protocol", "url", "token", "headers", "command", "args", "envs", "required", "tools")

    def __init__(self, d, path: str) -> None:
        d = _keys(d, path, ("name", "protocol", "url", "token", "headers", "command", "args", "envs", "required",
                            "tools"), _SERVER_NOT_YET)
        self.name = _str(d, "name", path, True)
        self.protocol = d.get("protocol")
        if self.protocol not in PROTOCOLS:
            raise _bad(f"{path}.protocol", "must be stdio, sse or streamable")
        if self.protocol == "stdio":
            for k in ("url", "token", "headers"):
                if k in d:
                    raise _bad(f"{path}.{k}", "is not a stdio setting (command, args, envs)")
            self.command = _str(d, "command", path, True)
            args = d.get("args") or []
            if type(args) is not list or not all(type(a) is str for a in args):
                raise _bad(f"{path}.args", "must be a list of strings")
            self.args = list(args)
            self.envs = _str_map(d, "envs", path)
            self.url, self.token, self.headers = None, None, {}
        else:
            for k in ("command", "args", "envs"):
                if k in d:
                    raise _bad(f"{path}.{k}", f"is not a {self.protocol} setting (url, token, headers)")
            self.url = _str(d, "url", path, True)
            if not self.url.startswith(("http://", "https://")):
                raise _bad(f"{path}.url", "must be an http(s) URL")
            self.token = _str(d, "token", path)
            self.headers = _str_map(d, "headers", path)
            self.command, self.args, self.envs = None, [], {}
        self.required = _bool(d, "required", path, False)
        tools = d.get("tools") or {}
        if type(tools) is not dict:
            raise _bad(f"{path}.tools", "must map tool names to their settings")
        self.tools = {n: ToolConfig(n, t, f"{path}.tools.{n}") for n, t in tools.items()}

    def http_headers(self) -> dict:
        h = dict(self.headers)
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        return h


def _decision(v, path: str):
    """"allow" | "deny" | ("deny", reason)."""
    if v in ("allow", "deny"):
        return v
    if type(v) is dict and set(v) == {"deny_with_reason"} and type(v["deny_with_reason"]) is str:
        return ("deny", v["deny_with_reason"])
    raise _bad(path, 'must be allow, deny or {deny_with_reason: "..."}')


class Policy:
    __slots__ = ("default", "servers", "tools")

    def __init__(self, d, path: str = "policy") -> None:
        d = _keys(d or {}, path, ("default", "servers", "tools"))
        self.default = _decision(d.get("default", "allow"), f"{path}.default")
        self.servers = {}
        for name, s in (d.get("servers") or {}).items():
            sp = f"{path}.servers.{name}"
            s = _keys(s or {}, sp, ("trust_level", "default"))
            trust = s.get("trust_level", "standard")
            if trust not in TRUST:
                raise _bad(f"{sp}.trust_level", "must be trusted, standard, untrusted or sandboxed")
            self.servers[name] = (trust, _decision(s.get("default", "allow"), f"{sp}.default"))
        tools = d.get("tools") or {}
        if type(tools) is not dict:
            raise _bad(f"{path}.tools", "must map server:tool names to decisions")
        self.tools = {k: _decision(v, f"{path}.tools.{k}") for k, v in tools.items()}

    def decide(self, server: str, tool: str, read_only: bool = False):
        """"allow", or the denial's message (module rules)."""
        d = self.tools.get(f"{server}:{tool}")
        if d is None and server in self.servers:
            trust, default = self.servers[server]
            if trust == "trusted":
                d = "allow"
            elif trust == "standard":
                d = default
            else:
                d = "allow" if read_only else ("deny", f"server '{server}' is {trust}: only read-only tools run")
        if d is None:
            d = self.default
        if d == "allow":
            return "allow"
        return d[1] if type(d) is tuple else f"tool '{server}:{tool}' is denied by the gateway's policy"


class McpConfig:
    __slots__ = ("servers", "policy", "enable_refresh", "tool_ttl", "refresh_interval", "refresh_on_error")

    def __init__(self, d) -> None:
        d = _keys(d, "(top)", ("servers", "inventory", "policy"), _NOT_YET)
        servers = d.get("servers") or []
        if type(servers) is not list:
            raise _bad("servers", "must be a list")
        self.servers = [ServerConfig(s, f"servers[{i}]") for i, s in enumerate(servers)]
        names = [s.name for s in self.servers]
        for n in names:
            if names.count(n) > 1:
                raise _bad("servers", f"the name {n!r} is used twice")
        inv = _keys(d.get("inventory") or {}, "inventory",
                    ("enable_refresh", "tool_ttl", "refresh_interval", "refresh_on_error"))
        self.enable_refresh = _bool(inv, "enable_refresh", "inventory", True)
        self.tool_ttl = _num(inv, "tool_ttl", "inventory", 300)
        self.refresh_interval = _num(inv, "refresh_interval", "inventory", 60)
        self.refresh_on_error = _bool(inv, "refresh_on_error", "inventory", True)
        self.policy = Policy(d.get("policy"))


def parse(text: str, env=os.environ) -> McpConfig:
    """The checked configuration of the file's ``text`` (raises ``ConfigError``)."""
    import yaml
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(FLAG, f"not valid YAML or JSON: {e}") from None
    return McpConfig(substitute(raw if raw is not None else {}, env=env))


def load(path: str, env=os.environ) -> McpConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(FLAG, f"cannot read {path}: {e.strerror}") from None
    return parse(text, env)
