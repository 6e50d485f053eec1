"""Which model group serves a request: explicit group (or a model alias) > agent type >
registered type > default."""

from __future__ import annotations

from dataclasses import dataclass

from llmgw.config.aliases import resolve_model
from llmgw.config.models import Config


@dataclass(frozen=True, slots=True)
class Resolution:
    model_group: str
    agent_type: str | None
    reason: str  # "explicit", "alias", "agent_type", "registered_agent", "default"
    # The name the client asked for when it named a group or an alias (not `auto`/none),
    # so the ledger row keeps it next to the group it became.
    requested_model: str | None = None


class AgentDirectory:
    """Agent types known for agent ids (from config and `register`), and their model groups."""

    def __init__(self, config: Config) -> None:
        self._groups = set(config.groups())
        self._aliases = dict(config.llmgw.model_aliases)
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
        """Pick the group; an agent type with no mapping uses the default group.
        `model_group` may be a group, an alias of `llmgw.model_aliases`, `auto` or None (the
        last two: by agent type); `UnknownModelGroup` when it is none of these."""
        known_type = agent_type or self._agents.get(agent_id)
        group = resolve_model(model_group, self._groups, self._aliases)
        if group is not None:
            reason = "explicit" if group == model_group else "alias"
            return Resolution(group, known_type, reason, model_group)
        if agent_type is not None and agent_type in self._type_groups:
            return Resolution(self._type_groups[agent_type], agent_type, "agent_type")
        registered = self._agents.get(agent_id)
        if agent_type is None and registered in self._type_groups:
            return Resolution(self._type_groups[registered], registered, "registered_agent")
        return Resolution(self._default, known_type, "default")
