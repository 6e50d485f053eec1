"""`llmgw.model_aliases`: client model names -> groups; exact group names first, then the
patterns in file order; bad aliases fail at load; unknown names say how to add one."""

from __future__ import annotations

import copy

import pytest

from llmgw.config.agents import AgentDirectory
from llmgw.config.aliases import is_pattern, resolve_model
from llmgw.config.loading import config_from_dict
from llmgw.errors import ConfigError, UnknownModelGroup

GROUPS = ("high-reasoning", "fast-response", "cost-optimized")
BASE: dict = {
    "model_list": [
        {"model_name": g, "litellm_params": {"model": f"openai/{g}"},
         "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}
        for g in GROUPS
    ],
    "llmgw": {"default_group": "fast-response",
              "agent_types": {"qa-engineer": "cost-optimized"},
              "model_aliases": {"claude-*haiku*": "fast-response",
                                "claude-*": "high-reasoning",
                                "gpt-4o-mini": "cost-optimized",
                                "gpt-*": "high-reasoning"}},
}


def config(**aliases: str) -> dict:
    data = copy.deepcopy(BASE)
    if aliases:
        data["llmgw"]["model_aliases"] = aliases
    return data


@pytest.fixture
def agents() -> AgentDirectory:
    return AgentDirectory(config_from_dict(BASE))


@pytest.mark.parametrize(("name", "group"), [
    ("claude-3-5-haiku-20241022", "fast-response"),  # first pattern in file order
    ("claude-haiku-4-5", "fast-response"),
    ("claude-sonnet-4-5-20250929", "high-reasoning"),
    ("claude-opus-4-1", "high-reasoning"),
    ("gpt-4o-mini", "cost-optimized"),  # its exact alias comes before gpt-*
    ("gpt-5-codex", "high-reasoning"),
])
def test_alias_patterns_in_file_order_first_match_wins(agents, name, group):
    r = agents.resolve("dev-1", agent_type="qa-engineer", model_group=name)
    assert (r.model_group, r.reason, r.requested_model, r.agent_type) == (
        group, "alias", name, "qa-engineer")


def test_an_exact_group_name_always_wins_over_a_pattern():
    # `*-response` would catch the group's own name: the group wins.
    cfg = config_from_dict(config(**{"*-response": "high-reasoning"}))
    r = AgentDirectory(cfg).resolve("a", model_group="fast-response")
    assert (r.model_group, r.reason, r.requested_model) == ("fast-response", "explicit",
                                                            "fast-response")
    assert AgentDirectory(cfg).resolve("a", model_group="slow-response").model_group == \
        "high-reasoning"


@pytest.mark.parametrize("name", [None, "", "auto"])
def test_auto_and_no_model_keep_the_agent_type_rule(agents, name):
    r = agents.resolve("dev-1", agent_type="qa-engineer", model_group=name)
    assert (r.model_group, r.reason, r.requested_model) == ("cost-optimized", "agent_type", None)
    assert agents.resolve("stranger", model_group=name).model_group == "fast-response"


def test_matching_is_case_sensitive_like_group_names():
    assert resolve_model("gpt-5", GROUPS, {"gpt-*": "high-reasoning"}) == "high-reasoning"
    with pytest.raises(UnknownModelGroup):
        resolve_model("GPT-5", GROUPS, {"gpt-*": "high-reasoning"})


def test_unmatched_name_is_unknown_model_group_saying_how_to_add_an_alias(agents):
    with pytest.raises(UnknownModelGroup) as info:
        agents.resolve("a", model_group="gemini-2.5-pro")
    error = info.value
    assert error.group == "gemini-2.5-pro"
    assert error.known == sorted(GROUPS)
    text = str(error)
    assert "Known groups: cost-optimized, fast-response, high-reasoning" in text
    assert "llmgw.model_aliases in model_list.yaml" in text
    assert "'gemini-*': cost-optimized" in text


def test_without_aliases_unknown_names_still_fail():
    data = copy.deepcopy(BASE)
    del data["llmgw"]["model_aliases"]
    with pytest.raises(UnknownModelGroup, match="Unknown model 'claude-opus-4-1'"):
        AgentDirectory(config_from_dict(data)).resolve("a", model_group="claude-opus-4-1")


def test_aliases_keep_file_order_through_loading():
    cfg = config_from_dict(BASE)
    assert list(cfg.llmgw.model_aliases) == ["claude-*haiku*", "claude-*", "gpt-4o-mini", "gpt-*"]


def test_alias_to_an_unknown_group_fails_at_load_with_its_key():
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(**{"claude-*": "high-reasoning", "gpt-*": "smart"}))
    assert info.value.key == "llmgw.model_aliases.gpt-*"
    assert "'smart' is not a model group" in str(info.value)
    assert "known: cost-optimized, fast-response, high-reasoning" in str(info.value)


def test_alias_named_like_a_group_fails_at_load_as_it_could_never_apply():
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(**{"fast-response": "high-reasoning"}))
    assert info.value.key == "llmgw.model_aliases.fast-response"
    assert "always wins" in str(info.value)


def test_alias_target_must_be_text():
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(**{"gpt-*": ["high-reasoning"]}))  # type: ignore[arg-type]
    assert info.value.key == "llmgw.model_aliases.gpt-*"


def test_is_pattern():
    assert is_pattern("claude-*") and is_pattern("gpt-4?") and is_pattern("o[13]-mini")
    assert not is_pattern("claude-sonnet-4-5")
