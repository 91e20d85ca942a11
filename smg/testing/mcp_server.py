"""A real MCP server for tests, built with the official ``mcp`` SDK (FastMCP), over
streamable HTTP (``--port``; the endpoint is ``/mcp``) or stdio (``--stdio``).

Tools: ``get_weather(city)`` → ``"sunny in <city>"``, ``add(a, b)`` → their sum,
``boom()`` → always raises (a tool error the gateway must report in its ``mcp_call``
item). ``python -m smg.testing.mcp_server --port 8765``.
"""
from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP


def build(host: str = "127.0.0.1", port: int = 0) -> FastMCP:
    app = FastMCP("smg-test-tools", host=host, port=port, log_level="WARNING")

    @app.tool(description="The weather in a city.")
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    @app.tool(description="The sum of two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool(description="Always fails.")
    def boom() -> str:
        raise RuntimeError("the boom tool failed")

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--stdio", action="store_true")
    a = ap.parse_args()
    app = build(port=a.port)
    app.run(transport="stdio" if a.stdio else "streamable-http")


if __name__ == "__main__":
    main()
