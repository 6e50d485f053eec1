"""Who an MCP call runs as (identity is the key, never the body; docs/mcp.md).

An `Identity` is what a key (or, for a trusted local stdio process, the environment) says:
the project, the agent, the agent type, and whether it is an admin key. The network front
gives `build_server` an identity per call; where it comes from is a seam: an
`Authenticator` (bearer key -> Identity, or None for an unknown key) for HTTP, and
`identity_from_env` for stdio. `key_authenticator` plugs the `api_keys` store into it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmgw.errors import ConfigError, InvalidRequest
from llmgw.types import check_id_text

ENV_API_KEY = "LLMGW_API_KEY"
ENV_PROJECT = "LLMGW_PROJECT"
ENV_AGENT = "LLMGW_AGENT"
ENV_AGENT_TYPE = "LLMGW_AGENT_TYPE"
AGENT_HEADER = "x-llmgw-agent"  # names the agent for an any-agent key (as the HTTP API does)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a caller may do. `agent_id` None: an any-agent key (the agent is named per
    connection) or an admin key (reads usage across projects and nothing else)."""

    project_id: str | None
    agent_id: str | None = None
    agent_type: str | None = None
    admin: bool = False

    def with_agent(self, agent_id: str | None) -> Identity:
        """This identity acting as `agent_id` (an any-agent key's named agent). An agent key
        keeps its own agent: naming another is refused."""
        if agent_id is None or agent_id == self.agent_id:
            return self
        if self.agent_id is not None:
            raise InvalidRequest(f"This key acts as agent {self.agent_id!r}; it cannot act as "
                                 f"{agent_id!r}.", hint="Use an any-agent key to name agents.")
        return Identity(self.project_id, _checked("agent", agent_id), self.agent_type,
                        self.admin)

    def caller(self) -> tuple[str, str]:
        """(agent_id, project_id) for a model call, or why this identity cannot make one."""
        if self.admin or self.project_id is None:
            raise InvalidRequest("An admin key reads usage only; it cannot call models.",
                                 hint="Use a project key (`llmgw keys create --project P`).")
        if self.agent_id is None:
            raise InvalidRequest(
                "This key serves any agent of its project, and no agent was named.",
                hint=f"Set {ENV_AGENT} (stdio) or send the X-LLMGW-Agent header (HTTP).")
        return self.agent_id, self.project_id


Authenticator = Callable[[str], Awaitable[Identity | None]]
"""A bearer key -> its Identity, or None when the key is unknown, revoked or expired."""


def identity_of_key(info: Any) -> Identity:
    """The Identity of an `api_keys.KeyInfo` (read by attribute: project_id, agent_id,
    agent_type, admin)."""
    return Identity(project_id=info.project_id, agent_id=info.agent_id,
                    agent_type=info.agent_type, admin=bool(info.admin))


def key_authenticator(engine: Any) -> Authenticator:
    """An Authenticator over the ledger's `api_keys` table (`llmgw keys create`)."""
    try:
        from llmgw.ledger.api_keys import ApiKeyStore
    except ImportError:  # API keys ship with `llmgw serve`
        raise ConfigError("This llmgw has no API keys (llmgw.ledger.api_keys).",
                          hint=f"Unset {ENV_API_KEY} and set {ENV_PROJECT} and {ENV_AGENT} "
                               "for a trusted local process.") from None
    store = ApiKeyStore(engine)

    async def authenticate(secret: str) -> Identity | None:
        info = await asyncio.to_thread(store.authenticate, secret)
        return None if info is None else identity_of_key(info)
    return authenticate


async def identity_from_env(environ: Mapping[str, str] | None = None, *,
                            authenticate: Callable[[], Authenticator] | None = None) -> Identity:
    """The stdio identity: `LLMGW_API_KEY` (checked by `authenticate()`'s authenticator;
    `LLMGW_AGENT` names the agent of an any-agent key), else `LLMGW_PROJECT` +
    `LLMGW_AGENT` (+ `LLMGW_AGENT_TYPE`) for a trusted local process."""
    env = os.environ if environ is None else environ
    key = (env.get(ENV_API_KEY) or "").strip()
    agent = env.get(ENV_AGENT) or None
    if key:
        if authenticate is None:
            raise ConfigError(f"{ENV_API_KEY} is set but no key store is configured.")
        identity = await authenticate()(key)
        if identity is None:
            raise ConfigError(f"{ENV_API_KEY} is unknown, revoked or expired.",
                              hint="Ask for a new key (`llmgw keys create`).")
        try:
            return identity.with_agent(agent)
        except InvalidRequest as exc:
            raise ConfigError(f"{ENV_AGENT}: {exc.message}", hint=exc.hint) from None
    project = env.get(ENV_PROJECT) or None
    if project is None or agent is None:
        raise ConfigError(f"No identity for `llmgw mcp`: set {ENV_API_KEY}, or {ENV_PROJECT} "
                          f"and {ENV_AGENT} for a trusted local process.",
                          hint="The ledger records every call under this project and agent.")
    return Identity(_checked("project", project), _checked("agent", agent),
                    _checked("agent type", env.get(ENV_AGENT_TYPE) or None))


def _checked(label: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        if len(value) > 200:
            raise ValueError("is longer than 200 characters")
        return check_id_text(value)
    except ValueError as exc:
        raise ConfigError(f"The {label} id {value[:40]!r} {exc}.") from None
