"""The MCP tool loop of a Responses turn: request tools of type ``mcp`` (a server the
client names by ``server_url``, over streamable HTTP, served with the official ``mcp``
SDK's client; or by ``server_label`` alone, a server of ``--mcp-config-path``,
smg/mcp/servers.py), and with the header ``X-SMG-MCP: enabled`` every configured
server.

The loop: the servers' tools are listed (one ``mcp_list_tools`` output item each) and
offered to the model as function tools; when the model calls one, the gateway calls
the server (an ``mcp_call`` item: arguments, output or error), appends the call and
its result to the chat and asks the model again, at most ``min(max_tool_calls, 10)``
times (then the response is ``incomplete``, reason ``max_tool_calls``). Calls of the
client's own function tools end the turn as ``function_call`` items.

Rules:
- ``require_approval`` (default ``"always"`` for a server the request names by URL, as
  OpenAI; ``"never"`` for a configured server, whose calls the configuration's policy
  allows or denies instead: a denied call is an ``mcp_call`` item with the denial as its
  error): a call that needs approval ends the turn with an ``mcp_approval_request``
  item; the client answers in the next turn (``previous_response_id``) with
  ``{"type": "mcp_approval_response", "approval_request_id", "approve"}``, and an
  approved call is executed before the model is asked again. ``"never"``, or
  ``{"never": {"tool_names": [...]}}`` for some tools.
- ``allowed_tools`` (a list of names, or ``{"tool_names": [...]}``) limits what is
  offered; ``headers`` (and ``authorization`` as a Bearer token) go to a server named
  by URL (a configured server has its own).
- Every operation on a server named by URL is its own session (connect, initialize,
  one request, close), bounded by ``MCP_TIMEOUT``: a server that is down or dies
  mid-loop gives an ``mcp_call`` item with its error (the model is told), never a hang.
  A server whose tools cannot be listed fails the request: 424 ``mcp_list_tools_failed``.
- Metrics (``McpMetrics``, when the gateway exports metrics): every executed call
  (``smg_mcp_tool_calls_total{model,tool_name,result}``, ``result`` success | error,
  and its duration), every model call the loop makes after tool results
  (``smg_mcp_tool_iterations_total{model}``).
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson

from smg.mcp.results import http_error, protocol_error, result_of
from smg.responses.convert import Bad, new_id

log = logging.getLogger("smg.mcp")

MCP_TIMEOUT = 30.0
DEFAULT_MAX_ITERATIONS = 10


def _names(v, param: str):
    if v is None:
        return None
    if type(v) is dict:
        v = v.get("tool_names")
    if type(v) is not list or not all(type(n) is str for n in v):
        raise Bad(f"'{param}' must be a list of tool names", param, "invalid_type")
    return set(v)


def _approval(tool: dict, param: str, default: str) -> tuple:
    """(``"always"`` | ``"never"``, tool names that never need it)."""
    ra = tool.get("require_approval", default)
    if ra in ("always", "never"):
        return ra, set()
    if type(ra) is dict and set(ra) <= {"always", "never"}:
        return "always", _names(ra.get("never"), f"{param}.require_approval.never") or set()
    raise Bad("'require_approval' must be always, never or {\"never\": {\"tool_names\": [...]}}",
              f"{param}.require_approval", "invalid_value")


class Server:
    """One request tool of type ``mcp``, checked."""

    __slots__ = ("label", "url", "headers", "allowed", "approval", "never")

    def __init__(self, tool: dict, param: str) -> None:
        label, url = tool.get("server_label"), tool.get("server_url")
        if type(label) is not str or not label:
            raise Bad("an mcp tool needs 'server_label'", f"{param}.server_label", "missing_required_parameter")
        if type(url) is not str or not url.startswith(("http://", "https://")):
            raise Bad("an mcp tool needs an http(s) 'server_url', or a 'server_label' naming a server of "
                      "--mcp-config-path (connectors are not supported yet)", f"{param}.server_url",
                      "missing_required_parameter")
        headers = tool.get("headers") or {}
        if type(headers) is not dict or not all(type(k) is str and type(v) is str for k, v in headers.items()):
            raise Bad("'headers' must map names to strings", f"{param}.headers", "invalid_type")
        auth = tool.get("authorization")
        if auth is not None:
            if type(auth) is not str:
                raise Bad("'authorization' must be a string", f"{param}.authorization", "invalid_type")
            headers = {**headers, "Authorization": "Bearer " + auth}
        self.label, self.url, self.headers = label, url, headers
        self.allowed = _names(tool.get("allowed_tools"), f"{param}.allowed_tools")
        self.approval, self.never = _approval(tool, param, "always")

    def needs_approval(self, name: str) -> bool:
        return self.approval == "always" and name not in self.never

    async def _session(self, fn):
        import httpx
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
        async with asyncio.timeout(MCP_TIMEOUT):
            async with create_mcp_http_client(headers=self.headers or None,
                                              timeout=httpx.Timeout(MCP_TIMEOUT)) as http:
                async with streamable_http_client(self.url, http_client=http) as (read, write, _):
                    async with ClientSession(read, write) as s:
                        await s.initialize()
                        return await fn(s)

    async def list_tools(self) -> list:
        async def op(s):
            return (await s.list_tools()).tools
        tools = await self._session(op)
        return [t for t in tools if self.allowed is None or t.name in self.allowed]

    async def call(self, name: str, arguments: dict) -> tuple:
        """(output, error) of one call."""
        async def op(s):
            return await s.call_tool(name, arguments)
        return result_of(await self._session(op))


class Configured:
    """A configured server (smg/mcp/servers.py) as one request uses it: its own
    ``allowed_tools`` and ``require_approval``."""

    __slots__ = ("server", "label", "allowed", "approval", "never")

    def __init__(self, server, tool: dict, param: str) -> None:
        for k in ("headers", "authorization"):
            if tool.get(k) is not None:
                raise Bad(f"'{k}' cannot be given for the configured MCP server '{server.label}'",
                          f"{param}.{k}", "invalid_value")
        self.server = server
        self.label = server.label
        self.allowed = _names(tool.get("allowed_tools"), f"{param}.allowed_tools")
        self.approval, self.never = _approval(tool, param, "never")

    def needs_approval(self, name: str) -> bool:
        return self.approval == "always" and name not in self.never

    async def list_tools(self) -> list:
        tools = await self.server.list_tools()
        return [t for t in tools if self.allowed is None or t.name in self.allowed]

    async def call(self, name: str, arguments: dict) -> tuple:
        return await self.server.call(name, arguments)


def servers_of(body: dict, configured=None, all_configured: bool = False) -> list:
    """The checked MCP servers of a request (raises ``Bad``); [] when it has none.
    ``configured``: the servers of ``--mcp-config-path`` (or None); ``all_configured``:
    the request asked for every one of them (``X-SMG-MCP: enabled``)."""
    out = []
    for i, tool in enumerate(body.get("tools") or ()):
        if type(tool) is dict and tool.get("type") == "mcp":
            label = tool.get("server_label")
            srv = configured.get(label) if configured is not None and type(label) is str else None
            if srv is not None and tool.get("server_url") is None:
                out.append(Configured(srv, tool, f"tools[{i}]"))
            else:
                out.append(Server(tool, f"tools[{i}]"))
    if all_configured and configured is not None:
        named = {s.label for s in out}
        out += [Configured(srv, {}, "tools") for srv in configured.all() if srv.label not in named]
    if out:
        m = body.get("max_tool_calls")
        if m is not None and (type(m) is not int or m < 1):
            raise Bad("'max_tool_calls' must be a positive integer", "max_tool_calls", "integer_below_min_value")
    return out


def error_text(err: dict) -> str:
    """What the model is told of an ``mcp_call`` error."""
    if "message" in err:
        return err["message"]
    return "".join(c.get("text", "") for c in err.get("content") or () if type(c) is dict) or "the tool failed"


def _failure(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"the MCP server did not answer within {MCP_TIMEOUT:g} s"
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"the MCP server failed: {type(e).__name__}: {e}"


def _failure_error(e: BaseException) -> dict:
    """The ``mcp_call`` error of a call that raised: the server's JSON-RPC error, or
    the gateway's view of a transport that failed (502) or timed out (504)."""
    inner = e
    while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
        inner = inner.exceptions[0]
    err = getattr(inner, "error", None)       # mcp.shared.exceptions.McpError: the server's answer
    if err is not None and type(getattr(err, "code", None)) is int:
        return protocol_error(err.code, f"the MCP server answered an error: {err.message}")
    return http_error(504 if isinstance(e, TimeoutError) else 502, _failure(e))


class Loop:
    """The MCP state of one turn (module docstring)."""

    __slots__ = ("servers", "tools", "output", "iterations", "cap", "again", "metrics", "model")

    def __init__(self, servers: list, max_tool_calls, metrics=None, model: str = "unknown") -> None:
        self.servers = servers
        self.metrics = metrics     # McpMetrics or None
        self.model = model
        self.tools: dict = {}      # tool name -> Server
        self.output: list = []     # mcp_list_tools, mcp_call items so far
        self.iterations = 0
        self.cap = min(max_tool_calls or DEFAULT_MAX_ITERATIONS, DEFAULT_MAX_ITERATIONS)
        self.again = None          # f(ctx): runs the turn's chat exchange again

    async def start(self) -> list | str:
        """Lists every server's tools: the chat function tools, or an error message."""
        fns = []
        for srv in self.servers:
            try:
                tools = await srv.list_tools()
            except Exception as e:  # noqa: BLE001 - any transport failure is the server's
                return f"Error retrieving tool list from MCP server '{srv.label}': {_failure(e)}"
            self.output.append({"id": new_id("mcpl_"), "type": "mcp_list_tools", "server_label": srv.label,
                                "tools": [{"name": t.name, "description": t.description,
                                           "input_schema": t.inputSchema, "annotations": None} for t in tools]})
            for t in tools:
                self.tools.setdefault(t.name, srv)
                fns.append({"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                             "parameters": t.inputSchema}})
        return fns

    def kind(self, name: str):
        """How the stream shows a call of ``name`` (smg/responses/stream.py): None for
        a function of the client's, else ("approval" | "mcp", server label)."""
        srv = self.tools.get(name)
        if srv is None:
            return None
        return ("approval" if srv.needs_approval(name) else "mcp", srv.label)

    def approval_requests(self, calls: list) -> list:
        """``mcp_approval_request`` items of the calls that need approval."""
        return [{"id": new_id("mcpr_"), "type": "mcp_approval_request", "server_label": self.tools[c["name"]].label,
                 "name": c["name"], "arguments": c["arguments"]} for c in calls
                if self.tools[c["name"]].needs_approval(c["name"])]

    async def results(self, calls: list, messages: list) -> list:
        """Runs ``calls`` (``{"id", "name", "arguments"}``), appends them and their
        results to the chat ``messages``; their ``(output, error)`` pairs."""
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls]})
        out = []
        for c in calls:
            output, error = await self._run(c)
            out.append((output, error))
            messages.append({"role": "tool", "tool_call_id": c["id"],
                             "content": output if error is None else f"error: {error_text(error)}"})
        return out

    async def _run(self, c: dict) -> tuple:
        srv = self.tools[c["name"]]
        try:
            args = orjson.loads(c["arguments"] or "{}")
            if type(args) is not dict:
                raise ValueError("the arguments are not a JSON object")
        except ValueError as e:
            return None, protocol_error(-32602, f"invalid arguments: {e}")
        started = time.monotonic()
        try:
            output, error = await srv.call(c["name"], args)
        except Exception as e:  # noqa: BLE001
            output, error = None, _failure_error(e)
        if self.metrics is not None:
            self.metrics.call(self.model, c["name"], error is None, time.monotonic() - started)
        return output, error

    async def execute(self, calls: list, messages: list) -> None:
        """``results`` of ``calls``, each added as its ``mcp_call`` item."""
        for c, (output, error) in zip(calls, await self.results(calls, messages)):
            self.output.append(call_item(self.tools[c["name"]].label, c, output, error))

    def iteration(self) -> None:
        """The model is asked again after tool results."""
        self.iterations += 1
        if self.metrics is not None:
            self.metrics.iteration(self.model)


def call_item(label: str, c: dict, output, error: dict | None, iid: str | None = None) -> dict:
    return {"id": iid or new_id("mcp_"), "type": "mcp_call", "server_label": label, "name": c["name"],
            "arguments": c["arguments"], "output": output, "error": error,
            "status": "completed" if error is None else "failed"}


class McpMetrics:
    """The ``smg_mcp_*`` counters the loop updates (module rules); registered by
    ``Metrics.add_mcp`` (smg/observability/metrics.py)."""

    __slots__ = ("calls", "duration", "iterations")

    def __init__(self, calls, duration, iterations) -> None:
        self.calls, self.duration, self.iterations = calls, duration, iterations

    def call(self, model: str, tool: str, ok: bool, seconds: float) -> None:
        self.calls.inc((model, tool, "success" if ok else "error"))
        self.duration.observe((model, tool), seconds)

    def iteration(self, model: str) -> None:
        self.iterations.inc((model,))
