"""Who asked, for which group, over which dialect: what every row of one request repeats."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked and for which group: the same on every row of one request."""

    request_id: str
    agent_id: str
    agent_type: str | None
    project_id: str
    stream: bool = False
    session_id: str | None = None  # the agent run (Claude Code's session, X-LLMGW-Session)
    end_user: str | None = None  # who the caller says it acts for (`user`, metadata.user_id)
    requested_model: str | None = None  # the model name the client asked for (an alias)
    dialect: str = "chat"  # the wire dialect: chat, anthropic, responses
