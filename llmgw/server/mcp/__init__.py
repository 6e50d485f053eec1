"""The MCP front: the server (`app`), caller identity, tool schemas, stdio transport."""
