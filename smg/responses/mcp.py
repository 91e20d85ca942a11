"""The MCP tool loop of a Responses turn: request tools of type ``mcp`` (a server the
client names by ``server_url``, over streamable HTTP), served with the official ``mcp``
SDK's client.

The loop: the servers' tools are listed (one ``mcp_list_tools`` output item each) and
offered to the model as function tools; when the model calls one, the gateway calls
the server (an ``mcp_call`` item: arguments, output or error), appends the call and
its result to the chat and asks the model again, at most ``min(max_tool_calls, 10)``
times (then the response is ``incomplete``, reason ``max_tool_calls``). Calls of the
client's own function tools end the turn as ``function_call`` items.

Rules:
- ``require_approval`` (default ``"always"``, as OpenAI): a call that needs approval
  ends the turn with an ``mcp_approval_request`` item; the client answers in the next
  turn (``previous_response_id``) with ``{"type": "mcp_approval_response",
  "approval_request_id", "approve"}``, and an approved call is executed before the model
  is asked again. ``"never"``, or ``{"never": {"tool_names": [...]}}`` for some tools.
- ``allowed_tools`` (a list of names, or ``{"tool_names": [...]}``) limits what is
  offered; ``headers`` (and ``authorization`` as a Bearer token) go to the server.
- Every server operation is its own session (connect, initialize, one request, close),
  bounded by ``MCP_TIMEOUT``: a server that is down or dies mid-loop gives an
  ``mcp_call`` item with its error (the model is told), never a hang. A server whose
  tools cannot be listed fails the request: 424 ``mcp_list_tools_failed``.
- Not streamed yet: ``stream`` with MCP tools is a 400.
"""
from __future__ import annotations

import asyncio
import logging

import orjson

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


class Server:
    """One request tool of type ``mcp``, checked."""

    __slots__ = ("label", "url", "headers", "allowed", "approval", "never")

    def __init__(self, tool: dict, param: str) -> None:
        label, url = tool.get("server_label"), tool.get("server_url")
        if type(label) is not str or not label:
            raise Bad("an mcp tool needs 'server_label'", f"{param}.server_label", "missing_required_parameter")
        if type(url) is not str or not url.startswith(("http://", "https://")):
            raise Bad("an mcp tool needs an http(s) 'server_url' (connectors and configured servers are not "
                      "supported yet)", f"{param}.server_url", "missing_required_parameter")
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
        ra = tool.get("require_approval", "always")
        self.never: set = set()
        if ra in ("always", "never"):
            self.approval = ra
        elif type(ra) is dict and set(ra) <= {"always", "never"}:
            self.approval = "always"
            self.never = _names(ra.get("never"), f"{param}.require_approval.never") or set()
        else:
            raise Bad("'require_approval' must be always, never or {\"never\": {\"tool_names\": [...]}}",
                      f"{param}.require_approval", "invalid_value")

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
        res = await self._session(op)
        text = "".join(getattr(c, "text", "") for c in res.content)
        return (None, text or "the tool failed") if res.isError else (text, None)


def servers_of(body: dict) -> list:
    """The checked MCP servers of a request (raises ``Bad``); [] when it has none."""
    out = []
    for i, tool in enumerate(body.get("tools") or ()):
        if type(tool) is dict and tool.get("type") == "mcp":
            out.append(Server(tool, f"tools[{i}]"))
    if out:
        if body.get("stream") is True:
            raise Bad("streaming with mcp tools is not supported by this gateway yet", "stream",
                      "unsupported_value")
        m = body.get("max_tool_calls")
        if m is not None and (type(m) is not int or m < 1):
            raise Bad("'max_tool_calls' must be a positive integer", "max_tool_calls", "integer_below_min_value")
    return out


def _failure(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"the MCP server did not answer within {MCP_TIMEOUT:g} s"
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"the MCP server failed: {type(e).__name__}: {e}"


class Loop:
    """The MCP state of one turn (module docstring)."""

    __slots__ = ("servers", "tools", "output", "iterations", "cap", "again")

    def __init__(self, servers: list, max_tool_calls) -> None:
        self.servers = servers
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

    def approval_requests(self, calls: list) -> list:
        """``mcp_approval_request`` items of the calls that need approval."""
        return [{"id": new_id("mcpr_"), "type": "mcp_approval_request", "server_label": self.tools[c["name"]].label,
                 "name": c["name"], "arguments": c["arguments"]} for c in calls
                if self.tools[c["name"]].needs_approval(c["name"])]

    async def execute(self, calls: list, messages: list) -> None:
        """Runs ``calls`` (``{"id", "name", "arguments"}``), adds their ``mcp_call``
        items, and appends them and their results to the chat ``messages``."""
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls]})
        for c in calls:
            srv = self.tools[c["name"]]
            try:
                args = orjson.loads(c["arguments"] or "{}")
                if type(args) is not dict:
                    raise ValueError("the arguments are not a JSON object")
            except ValueError as e:
                output, error = None, f"invalid arguments: {e}"
            else:
                try:
                    output, error = await srv.call(c["name"], args)
                except Exception as e:  # noqa: BLE001
                    output, error = None, _failure(e)
            self.output.append({"id": new_id("mcp_"), "type": "mcp_call", "server_label": srv.label,
                                "name": c["name"], "arguments": c["arguments"], "output": output, "error": error,
                                "status": "completed" if error is None else "failed"})
            messages.append({"role": "tool", "tool_call_id": c["id"],
                             "content": output if error is None else f"error: {error}"})
