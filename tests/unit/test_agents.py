"""Model group resolution: explicit group > agent type > registered type > default group."""

import pytest

from llmgw.config.agents import AgentDirectory
from llmgw.config.loading import config_from_dict
from llmgw.errors import UnknownModelGroup

CFG = config_from_dict({
    "model_list": [
        {"model_name": g, "litellm_params": {"model": f"openai/{g}"},
         "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}
        for g in ("high-reasoning", "fast-response", "cost-optimized")
    ],
    "llmgw": {"default_group": "fast-response",
              "agent_types": {"software-architect": "high-reasoning", "qa-engineer": "cost-optimized"},
              "agents": {"arch-1": "software-architect"}},
})


@pytest.fixture
def agents() -> AgentDirectory:
    return AgentDirectory(CFG)


def test_explicit_group_wins_over_everything(agents):
    r = agents.resolve("arch-1", agent_type="qa-engineer", model_group="cost-optimized")
    assert (r.model_group, r.reason, r.agent_type) == ("cost-optimized", "explicit", "qa-engineer")


def test_agent_type_mapping_beats_registered_type(agents):
    r = agents.resolve("arch-1", agent_type="qa-engineer")
    assert (r.model_group, r.reason, r.agent_type) == ("cost-optimized", "agent_type", "qa-engineer")


def test_registered_type_from_config_and_from_register(agents):
    r = agents.resolve("arch-1")
    assert (r.model_group, r.reason, r.agent_type) == ("high-reasoning", "registered_agent",
                                                       "software-architect")
    agents.register("qa-7", "qa-engineer")
    assert agents.resolve("qa-7").model_group == "cost-optimized"


def test_default_group_for_unknown_agents_and_unmapped_types(agents):
    assert agents.resolve("stranger").model_group == "fast-response"
    r = agents.resolve("stranger", agent_type="data-scientist")
    assert (r.model_group, r.reason, r.agent_type) == ("fast-response", "default", "data-scientist")


def test_unknown_group_lists_known_ones(agents):
    with pytest.raises(UnknownModelGroup) as info:
        agents.resolve("a", model_group="gpt-5-ultra")
    assert info.value.known == ["cost-optimized", "fast-response", "high-reasoning"]
    assert "cost-optimized, fast-response, high-reasoning" in str(info.value)
