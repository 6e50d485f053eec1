"""Which model group serves a request: explicit group > agent type > registered type > default."""

from __future__ import annotations

from dataclasses import dataclass

from llmgw.config import Config
from llmgw.errors import UnknownModelGroup


@dataclass(frozen=True, slots=True)
class Resolution:
    model_group: str
    agent_type: str | None
    reason: str  # "explicit", "agent_type", "registered_agent", "default"


class AgentDirectory:
    """Agent types known for agent ids (from config and `register`), and their model groups."""

    def __init__(self, config: Config) -> None:
        self._groups = set(config.groups())
        self._type_groups = config.llmgw.agent_type_groups()
        self._agents = dict(config.llmgw.agents)
        self._default = config.llmgw.default_group

    def register(self, agent_id: str, agent_type: str) -> None:
        """Remember an agent's type so later calls need not repeat it."""
        self._agents[agent_id] = agent_type

    def agent_type_of(self, agent_id: str) -> str | None:
        return self._agents.get(agent_id)

    def resolve(self, agent_id: str, *, agent_type: str | None = None,
                model_group: str | None = None) -> Resolution:
        """Pick the group; an agent type with no mapping uses the default group."""
        known_type = agent_type or self._agents.get(agent_id)
        if model_group is not None:
            if model_group not in self._groups:
                raise UnknownModelGroup(model_group, list(self._groups))
            return Resolution(model_group, known_type, "explicit")
        if agent_type is not None and agent_type in self._type_groups:
            return Resolution(self._type_groups[agent_type], agent_type, "agent_type")
        registered = self._agents.get(agent_id)
        if agent_type is None and registered in self._type_groups:
            return Resolution(self._type_groups[registered], registered, "registered_agent")
        return Resolution(self._default, known_type, "default")
