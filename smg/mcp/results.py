"""The ``mcp_call`` item's outcome shapes, shared by servers named in a request
(smg/responses/mcp.py) and configured servers (smg/mcp/servers.py).

Rules: a call either has an output (the text of the result's content) or an error
object, never both; the error object is one of ``mcp_tool_execution_error`` (the tool
ran and failed: the server's content kept), ``mcp_protocol_error`` (a JSON-RPC error
code and message) or ``http_error`` (an HTTP status and message: the server could
not be reached, timed out, or the policy denied the call)."""
from __future__ import annotations


def result_of(res) -> tuple:
    """(output, error) of an SDK ``CallToolResult``: the text, or a tool execution error
    carrying the server's content."""
    if res.isError:
        content = [c.model_dump(mode="json", exclude_none=True) for c in res.content] or \
            [{"type": "text", "text": "the tool failed"}]
        return None, {"type": "mcp_tool_execution_error", "content": content}
    return "".join(getattr(c, "text", "") for c in res.content), None


def protocol_error(code: int, message: str) -> dict:
    return {"type": "mcp_protocol_error", "code": code, "message": message}


def http_error(code: int, message: str) -> dict:
    return {"type": "http_error", "code": code, "message": message}
