"""The configured MCP servers (smg/mcp/config.py) while the gateway runs: one MCP
client session per server (the official ``mcp`` SDK: stdio, SSE or streamable HTTP)
and its tool inventory.

Rules:
- Start-up connects every server and lists its tools; a ``required`` server that
  cannot be reached stops start-up (``ConfigError`` naming it), any other is logged
  and tried again when it is next used or refreshed.
- A session lives in a task of its own (the SDK's transports are entered and left in
  one task); calls from requests go through it. A session that ends (the server died,
  the connection dropped) is opened again on the next use.
- The inventory: the server's tools as the model sees them (``alias`` when
  configured), refreshed every ``refresh_interval`` seconds when ``enable_refresh``,
  listed again on use once older than ``tool_ttl``, and after a failed call when
  ``refresh_on_error``.
- Every operation is bounded by ``timeout`` seconds.
- ``active()``: the servers whose session is open (``smg_mcp_servers_active``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from smg.errors import ConfigError
from smg.mcp.config import FLAG, McpConfig, ServerConfig
from smg.mcp.results import http_error, protocol_error, result_of

log = logging.getLogger("smg.mcp")


class Tool:
    """A tool as offered to the model: ``name`` (the alias when configured), the
    server's ``real`` name, ``description``, ``inputSchema``, ``read_only``."""

    __slots__ = ("name", "real", "description", "inputSchema", "read_only", "config")

    def __init__(self, tool, config) -> None:
        self.real = tool.name
        self.config = config
        self.name = config.alias if config is not None and config.alias else tool.name
        self.description = tool.description
        self.inputSchema = tool.inputSchema
        ann = getattr(tool, "annotations", None)
        self.read_only = bool(ann is not None and getattr(ann, "readOnlyHint", False))


def _transport(cfg: ServerConfig, timeout: float):
    if cfg.protocol == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client
        import os
        env = dict(os.environ)
        env.update(cfg.envs)
        return stdio_client(StdioServerParameters(command=cfg.command, args=cfg.args, env=env))
    if cfg.protocol == "sse":
        from mcp.client.sse import sse_client
        return sse_client(cfg.url, headers=cfg.http_headers() or None, timeout=timeout)
    import httpx
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    http = create_mcp_http_client(headers=cfg.http_headers() or None, timeout=httpx.Timeout(timeout))

    @contextlib.asynccontextmanager
    async def both():
        async with http:
            async with streamable_http_client(cfg.url, http_client=http) as streams:
                yield streams
    return both()


class ConfiguredServer:
    """One configured server (module rules)."""

    def __init__(self, cfg: ServerConfig, inventory: McpConfig, policy, timeout: float) -> None:
        self.cfg = cfg
        self.label = cfg.name
        self.inv = inventory
        self.policy = policy
        self.timeout = timeout
        self.session = None
        self._task = None
        self._stop = None
        self._opening = None
        self.tools: list = []
        self.listed_at = None        # monotonic time of the last listing, None: never

    # -- the session --------------------------------------------------------------------

    async def _run(self, ready: asyncio.Future) -> None:
        from mcp import ClientSession
        try:
            async with _transport(self.cfg, self.timeout) as streams:
                async with ClientSession(streams[0], streams[1],
                                         read_timeout_seconds=timedelta(seconds=self.timeout)) as s:
                    await s.initialize()
                    self.session = s
                    if not ready.done():
                        ready.set_result(s)
                    await self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - the session's end, whatever ended it
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else ConnectionError(str(e)))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self.session = None

    async def _open(self):
        if self.session is not None and self._task is not None and not self._task.done():
            return self.session
        if self._opening is None:
            self._stop = asyncio.Event()
            ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._run(ready))
            self._opening = ready
        opening = self._opening
        try:
            return await asyncio.wait_for(asyncio.shield(opening), self.timeout)
        except BaseException:
            if self._opening is opening:
                self._opening = None
                await self._drop()
            raise
        finally:
            if self._opening is opening and opening.done():
                self._opening = None

    async def _drop(self) -> None:
        task, self._task = self._task, None
        self.session = None
        if task is not None and not task.done():
            self._stop.set()          # the session's own exit first, then the hard way
            done, _ = await asyncio.wait((task,), timeout=2.0)
            if not done:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    @property
    def connected(self) -> bool:
        return self.session is not None and self._task is not None and not self._task.done()

    async def _op(self, fn):
        s = await self._open()
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(s)
        except Exception:
            await self._drop()      # the next use opens a new session
            raise

    # -- the inventory ------------------------------------------------------------------

    async def refresh(self) -> list:
        async def op(s):
            return (await s.list_tools()).tools
        listed = await self._op(op)
        self.tools = [Tool(t, self.cfg.tools.get(t.name)) for t in listed]
        self.listed_at = time.monotonic()
        return self.tools

    async def list_tools(self) -> list:
        if self.listed_at is None or time.monotonic() - self.listed_at > self.inv.tool_ttl:
            await self.refresh()
        return self.tools

    def _tool(self, name: str):
        for t in self.tools:
            if t.name == name:
                return t
        return None

    def denial(self, name: str):
        """None when the policy lets the tool ``name`` run, else why not."""
        t = self._tool(name)
        if t is None:
            return f"the MCP server '{self.label}' has no tool '{name}'"
        d = self.policy.decide(self.label, t.real, t.read_only)
        return None if d == "allow" else d

    async def call(self, name: str, arguments: dict) -> tuple:
        """(output, error) of a call of the offered tool ``name``: error is None or an
        ``mcp_call`` error object (a denial is an ``http_error`` 403)."""
        t = self._tool(name)
        if t is None:
            return None, protocol_error(-32602, f"the MCP server '{self.label}' has no tool '{name}'")
        denied = self.denial(name)
        if denied is not None:
            return None, http_error(403, denied)
        args = t.config.arguments(arguments) if t.config is not None else arguments

        async def op(s):
            return await s.call_tool(t.real, args)
        try:
            res = await self._op(op)
        except Exception:
            if self.inv.refresh_on_error:
                self.listed_at = None     # listed again on the next use
            raise
        return result_of(res)

    async def close(self) -> None:
        await self._drop()


class ConfiguredServers:
    """Every configured server, by label (module rules)."""

    def __init__(self, config: McpConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.servers = {s.name: ConfiguredServer(s, config, config.policy, timeout) for s in config.servers}
        self._refresher = None

    def get(self, label: str):
        return self.servers.get(label)

    def all(self) -> list:
        return list(self.servers.values())

    def active(self) -> int:
        return sum(1 for s in self.servers.values() if s.connected)

    async def start(self) -> None:
        async def first(srv):
            try:
                await srv.refresh()
            except Exception as e:  # noqa: BLE001 - any failure to reach it
                if srv.cfg.required:
                    raise ConfigError(FLAG, f"the required MCP server '{srv.label}' cannot be reached: "
                                      f"{_describe(e)}") from None
                log.warning("MCP server '%s' cannot be reached (tried again on use): %s", srv.label, _describe(e))
        try:
            await asyncio.gather(*(first(s) for s in self.servers.values()))
        except ConfigError:
            await self.close()
            raise
        if self.config.enable_refresh and self.config.refresh_interval > 0 and self.servers:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            for srv in list(self.servers.values()):
                try:
                    await srv.refresh()
                except Exception as e:  # noqa: BLE001
                    log.warning("MCP server '%s': refreshing its tools failed: %s", srv.label, _describe(e))

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(BaseException):
                await self._refresher
            self._refresher = None
        for s in self.servers.values():
            await s.close()


def _describe(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, TimeoutError):
        return "no answer in time"
    return f"{type(e).__name__}: {e}"
