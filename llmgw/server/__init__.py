"""The network fronts: the HTTP app (`llmgw serve`) and the MCP server (`llmgw mcp`)."""
