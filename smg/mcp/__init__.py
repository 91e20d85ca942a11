"""MCP servers the operator configures (``--mcp-config-path``): the file's format
(smg/mcp/config.py) and the servers connected at start-up with their tool inventory
(smg/mcp/servers.py), and the shapes of a call's outcome (smg/mcp/results.py). The
tool loop that uses them is smg/responses/mcp.py."""
