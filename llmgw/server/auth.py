"""Identity is the key, never the body (DESIGN section 12).

`Authorization: Bearer <key>` or Anthropic's `x-api-key: <key>` -> the key's `KeyInfo`.
An agent key fixes project and agent; an any-agent key fixes the project and takes the agent
from OpenAI's `user` field or `X-LLMGW-Agent` (required); an admin key reads usage only."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.requests import Request

from llmgw.ledger.api_keys import ApiKeyStore, KeyInfo, hash_key
from llmgw.server.errors import FrontError

AGENT_HEADER = "x-llmgw-agent"
AGENT_TYPE_HEADER = "x-llmgw-agent-type"
PROJECT_HEADER = "x-llmgw-project"

_NO_KEY = ("No API key. Send `Authorization: Bearer <key>` (or `x-api-key: <key>`); "
           "`llmgw keys create` issues one.")
_BAD_KEY = ("The API key is unknown, revoked or expired. Ask for a new one "
            "(`llmgw keys create`).")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a completion is for: the gateway's agent_id, project_id and agent_type."""

    project_id: str
    agent_id: str
    agent_type: str | None
    key: KeyInfo


class Authenticator:
    """Checks keys against the store, remembering good ones for `cache_s` seconds so a
    request costs no database read; unknown keys are never remembered."""

    def __init__(self, store: ApiKeyStore, *, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._known: dict[str, tuple[float, KeyInfo]] = {}

    async def key_of(self, request: Request) -> KeyInfo:
        secret = _secret(request)
        if not secret:
            raise FrontError(401, "missing_api_key", _NO_KEY)
        digest = hash_key(secret) if self.cache_s > 0 else ""
        if digest:
            found = self._known.get(digest)
            if found is not None and time.monotonic() - found[0] < self.cache_s:
                return found[1]
        info = await asyncio.to_thread(self.store.authenticate, secret)
        if info is None:
            raise FrontError(401, "invalid_api_key", _BAD_KEY)
        if digest:
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[digest] = (time.monotonic(), info)
        return info


def _secret(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def caller_of(key: KeyInfo, request: Request, *, user: str | None = None) -> Caller:
    """The identity a completion runs under. `user` is OpenAI's `user` field (or the
    Anthropic `metadata.user_id`): the agent, for an any-agent key."""
    if key.admin:
        raise FrontError(403, "admin_key_reads_usage_only",
                         "An admin key reads usage only; it cannot call models. Use a project "
                         "key (`llmgw keys create --project P ...`).")
    assert key.project_id is not None
    project = request.headers.get(PROJECT_HEADER)
    if project is not None and project != key.project_id:
        raise FrontError(403, "project_not_allowed",
                         f"This key belongs to project {key.project_id!r}; it cannot act for "
                         f"project {project!r}. Use that project's key.")
    named = request.headers.get(AGENT_HEADER) or None
    if named is not None and user is not None and named != user:
        raise FrontError(400, "conflicting_agent",
                         f"The {AGENT_HEADER} header ({named!r}) and `user` ({user!r}) name "
                         "different agents. Send one.", param="user")
    named = named or user or None
    agent_type = request.headers.get(AGENT_TYPE_HEADER) or None
    if key.agent_id is not None:  # an agent key: the key is the identity
        if named is not None and named != key.agent_id:
            raise FrontError(403, "agent_not_allowed",
                             f"This key acts as agent {key.agent_id!r}; it cannot act as "
                             f"{named!r}. Use an --any-agent key to name agents per request.")
        if agent_type is not None and agent_type != key.agent_type:
            raise FrontError(403, "agent_type_not_allowed",
                             f"This key's agent type is {key.agent_type!r}, not "
                             f"{agent_type!r}.")
        return Caller(key.project_id, key.agent_id, key.agent_type, key)
    if named is None:
        raise FrontError(400, "agent_required",
                         "This key serves any agent of its project: name the agent in OpenAI's "
                         f"`user` field or the {AGENT_HEADER} header.", param="user")
    if not named.strip() or len(named) > 200:
        raise FrontError(400, "invalid_agent", "The agent id must be 1 to 200 characters.",
                         param="user")
    return Caller(key.project_id, named, agent_type, key)


def usage_project(key: KeyInfo, asked: str | None) -> str | None:
    """The project a usage report may cover: a project key its own, an admin key any
    (None: every project)."""
    if key.admin:
        return asked
    if asked is not None and asked != key.project_id:
        raise FrontError(403, "project_not_allowed",
                         f"This key reads project {key.project_id!r}'s usage only, not "
                         f"{asked!r}.")
    return key.project_id
