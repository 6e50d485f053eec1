"""Cached answers: the key, the protocol every backend implements, and the backends.

The key is the sha256 of canonical JSON of (scope, model group, messages, every parameter
that can change the answer). The scope is part of the key *and* its readable prefix, so a
project's answers can never be served to another project and can be cleared on their own.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from llmgw.types import Usage

KEY_PREFIX = "llmgw:cache:"

# Parameters that cannot change the answer; everything else is part of the key, so a
# provider-specific extra the gateway has never heard of still separates two entries.
_NOT_IN_KEY = frozenset({
    "timeout", "request_timeout", "metadata", "user", "stream", "stream_options",
    "num_retries", "max_retries", "_skip_mcp_handler", "mock_response", "cache",
})


class CachedAnswer(BaseModel):
    """An answer as stored: what to replay and what it cost the first time."""

    content: str | None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage
    cost_micros: int  # what the first call cost: a hit saves this much
    model_group: str  # the group that actually served it (a fallback's, if one did)
    requested_group: str
    deployment: str | None = None
    provider: str | None = None
    model: str | None = None
    request_id: str  # the request that paid for it
    created_at: datetime


class CacheStats(BaseModel):
    backend: str
    entries: int
    hits: int
    misses: int
    errors: int = 0


@runtime_checkable
class Cache(Protocol):
    """What a cache backend does. Failures must not fail a request: a backend that cannot
    be reached answers `get` with None (a miss) and logs a warning."""

    name: str

    async def get(self, key: str) -> CachedAnswer | None: ...

    async def set(self, key: str, answer: CachedAnswer, ttl_s: float) -> None: ...

    async def clear(self, scope: str | None = None) -> int:
        """Delete every entry, or those of one scope (e.g. `project:checkout`); returns how
        many were deleted."""
        ...

    async def stats(self) -> CacheStats: ...

    async def aclose(self) -> None: ...


def scope_of(kind: str, *, project_id: str, agent_type: str | None) -> str:
    """The scope string for a request: `project:<id>`, `agent_type:<type>` or `global`."""
    if kind == "global":
        return "global"
    if kind == "agent_type":
        return f"agent_type:{agent_type or '-'}"
    return f"project:{project_id}"


def cache_key(scope: str, model_group: str, messages: list[dict[str, Any]],
              params: dict[str, Any]) -> str:
    """`llmgw:cache:<scope>:<sha256>` of the canonical JSON of everything that shapes the
    answer."""
    material = {
        "scope": scope,
        "model_group": model_group,
        "messages": messages,
        "params": {k: v for k, v in params.items() if k not in _NOT_IN_KEY},
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return f"{KEY_PREFIX}{scope}:{hashlib.sha256(canonical.encode()).hexdigest()}"
