"""Cached answers: the key, the protocol every backend implements, and the backends.

The key is the sha256 of canonical JSON of (scope, model group, messages, every parameter
that can change the answer). The scope is part of the key *and* its readable prefix, so a
project's answers can never be served to another project and can be cleared on their own.

Key format: `llmgw:cache:<scope>:<sha256 hex>`, where `<scope>` is `global`,
`project:<id>` or `agent_type:<type>` with the id percent-encoded (only `A-Z a-z 0-9 _ . - ~`
and `%XX` remain). An encoded id holds no `:` and no Redis glob character, so one scope's
prefix is never the start of another's keys: `project:a` cannot match `project:a:b`'s
entries, and `a*` or `a?` match only themselves. The model group is only inside the hash.
Keys written before this encoding (ids with any other character) simply miss now and
expire with their TTL; `clear()` of everything still removes them. No migration.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

from pydantic import BaseModel, Field

from llmgw._litellm import SKIP_MCP_HANDLER
from llmgw.types import Usage

KEY_PREFIX = "llmgw:cache:"
HASH_LEN = 64  # hex digits of the sha256 that ends every key

# A scope as `scope_of` writes it. An agent type of None encodes as the empty string, which
# no real type can be (types are non-empty).
_ENCODED = r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})"
_SCOPE = re.compile(rf"global|project:{_ENCODED}+|agent_type:{_ENCODED}*")

# Parameters that cannot change the answer; everything else is part of the key, so a
# provider-specific extra the gateway has never heard of still separates two entries.
_NOT_IN_KEY = frozenset({
    "timeout", "request_timeout", "metadata", "user", "stream", "stream_options",
    "num_retries", "max_retries", SKIP_MCP_HANDLER, "mock_response", "cache",
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
    body: dict[str, Any] | None = None  # the answer in its dialect's wire shape (Completion.body)
    dialect: str = "chat"


class CacheStats(BaseModel):
    backend: str
    entries: int
    scope: str | None = None  # the scope `entries` counts; None: every entry
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
        """Delete every entry, or exactly those of one scope (from `scope_of`); returns how
        many were deleted."""
        ...

    async def stats(self, scope: str | None = None) -> CacheStats:
        """Counts; `entries` is every entry's, or exactly one scope's."""
        ...

    async def aclose(self) -> None: ...


def _encode(part: str) -> str:
    return quote(part, safe="")  # injective; leaves only A-Z a-z 0-9 _ . - ~ and %XX


def scope_of(kind: str, *, project_id: str, agent_type: str | None) -> str:
    """The scope string for a request: `project:<id>`, `agent_type:<type>` or `global`, its
    id percent-encoded (see the module's note). An agent type of None is `agent_type:`."""
    if kind == "global":
        return "global"
    if kind == "agent_type":
        if agent_type == "":
            raise ValueError("agent_type must be None or non-empty")
        return f"agent_type:{_encode(agent_type or '')}"
    if not project_id:
        raise ValueError("project_id must be non-empty")
    return f"project:{_encode(project_id)}"


def check_scope(scope: str) -> str:
    """`scope` if `scope_of` could have written it; a ValueError otherwise (a raw id would let
    one scope's prefix match another's keys)."""
    if _SCOPE.fullmatch(scope) is None:
        raise ValueError(f"not a cache scope from scope_of(): {scope!r}")
    return scope


def scope_prefix(scope: str | None) -> str:
    """What every key of `scope` (of any scope when None) starts with."""
    return KEY_PREFIX if scope is None else f"{KEY_PREFIX}{check_scope(scope)}:"


def in_scope(key: str, prefix: str) -> bool:
    """True if `key` is an entry of the scope whose `scope_prefix` is `prefix`: the prefix and
    then exactly the hash (keys of the format before the encoding never are)."""
    return (len(key) == len(prefix) + HASH_LEN and key.startswith(prefix)
            and all(c in "0123456789abcdef" for c in key[len(prefix):]))


def cache_key(scope: str, model_group: str, messages: list[dict[str, Any]],
              params: dict[str, Any]) -> str:
    """`llmgw:cache:<scope>:<sha256>` of the canonical JSON of everything that shapes the
    answer. `scope` comes from `scope_of` (anything else is a ValueError)."""
    check_scope(scope)
    material = {
        "scope": scope,
        "model_group": model_group,
        "messages": messages,
        "params": {k: v for k, v in params.items() if k not in _NOT_IN_KEY},
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return f"{KEY_PREFIX}{scope}:{hashlib.sha256(canonical.encode()).hexdigest()}"
