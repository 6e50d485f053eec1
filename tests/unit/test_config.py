"""model_list.yaml loading: the shipped file is valid; bad files fail at load naming the key."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from llmgw.config.loading import config_from_dict, load_config
from llmgw.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD: dict = {
    "model_list": [
        {"model_name": "primary", "litellm_params": {"model": "openai/a", "api_key": "sk-abcdef123"},
         "model_info": {"id": "p1", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}},
        {"model_name": "backup", "litellm_params": {"model": "anthropic/b", "input_cost_per_token": 0,
                                                    "output_cost_per_token": 0}},
    ],
    "router_settings": {"num_retries": 0, "fallbacks": [{"primary": ["backup"]}]},
    "llmgw": {"default_group": "primary", "agent_types": {"qa": "backup"}},
}


def bad(mutate) -> dict:
    data = copy.deepcopy(GOOD)
    mutate(data)
    return data


def test_shipped_model_list_is_valid_and_complete():
    cfg = load_config(REPO / "model_list.yaml")
    assert set(cfg.groups()) == {"high-reasoning", "fast-response", "cost-optimized", "local"}
    assert set(cfg.llmgw.agent_types) == {"product-owner", "software-architect", "software-engineer",
                                          "qa-engineer", "devops-engineer", "project-manager"}
    assert cfg.fallback_chain("high-reasoning") == ["high-reasoning", "fast-response",
                                                    "cost-optimized", "local"]
    assert all(cfg.fallback_chain(g)[-1] == "local" for g in cfg.groups())
    providers = {d.provider for d in cfg.model_list}
    assert {"anthropic", "openai"} <= providers
    assert all(d.input_price >= 0 and d.output_price >= 0 for d in cfg.model_list)


def test_ids_generated_when_missing_and_prices_exact():
    cfg = config_from_dict(GOOD)
    assert [d.id for d in cfg.model_list] == ["p1", "backup:anthropic/b"]
    assert cfg.model_list[0].input_price == Decimal("0.000001")
    litellm_form = cfg.model_list[1].to_litellm()
    # every cache rate is named for LiteLLM too (none known: the input rate), never left at $0
    # by omission
    assert litellm_form["model_info"] == {"id": "backup:anthropic/b", "input_cost_per_token": 0.0,
                                          "output_cost_per_token": 0.0,
                                          "cache_read_input_token_cost": 0.0,
                                          "cache_creation_input_token_cost": 0.0,
                                          "cache_creation_input_token_cost_above_1hr": 0.0}
    assert "input_cost_per_token" not in litellm_form["litellm_params"]


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda d: d["model_list"][0]["litellm_params"].pop("model"),
         "model_list[0].litellm_params.model", "Field required"),
        (lambda d: d["model_list"][0]["model_info"].pop("output_cost_per_token"),
         "model_list[0].model_info.output_cost_per_token", "0 for local models"),
        (lambda d: d["model_list"][0]["model_info"].update(input_cost_per_token=-1),
         "model_list[0].model_info.input_cost_per_token", "greater than or equal to 0"),
        (lambda d: d["model_list"][1].setdefault("model_info", {}).update(id="p1"),
         "model_list[1].model_info.id", "repeats"),
        (lambda d: d["llmgw"].update(default_group="nope"), "llmgw.default_group", "not a model group"),
        (lambda d: d["llmgw"]["agent_types"].update(dev="ghost"), "llmgw.agent_types.dev",
         "not a model group"),
        (lambda d: d["router_settings"]["fallbacks"].append({"primary": ["ghost"]}),
         "router_settings.fallbacks[1]", "'ghost' is not a model group"),
        (lambda d: d["llmgw"].update(defualt_grop="x"), "llmgw.defualt_grop",
         "unknown key; did you mean 'default_group'?"),
        (lambda d: d["llmgw"].update(budgets={"projects": {"*": {"daily": 5}}}),
         "llmgw.budgets.projects.*.daily", "did you mean 'daily_usd'?"),
        (lambda d: d["llmgw"].update(budgets={"global": {"monthly_usd": "1e308"}}),
         "llmgw.budgets.global.monthly_usd", "less than or equal to 1000000000"),
        (lambda d: d["llmgw"].update(budgets={"per_request_usd": "nan"}),
         "llmgw.budgets.per_request_usd", "finite number"),
        (lambda d: d["llmgw"].update(budgets={"prompt_margin": float("inf")}),
         "llmgw.budgets.prompt_margin", "finite number"),
        (lambda d: d["llmgw"].update(budgets={"default_max_tokens": 10**30}),
         "llmgw.budgets.default_max_tokens", "less than or equal to"),
        (lambda d: d["llmgw"].update(request_timeout_s=1e300), "llmgw.request_timeout_s",
         "less than or equal to"),
        (lambda d: d["model_list"][0]["model_info"].update(output_cost_per_token="1e30"),
         "model_list[0].model_info.output_cost_per_token", "less than or equal to 1"),
        (lambda d: d["model_list"][0]["model_info"].update(input_cost_per_token="inf"),
         "model_list[0].model_info.input_cost_per_token", "finite number"),
        (lambda d: d["model_list"][0]["model_info"].update(max_tokens=0),
         "model_list[0].model_info.max_tokens", "greater than 0"),
        (lambda d: d["model_list"][0]["litellm_params"].update(timeout=-1),
         "model_list[0].litellm_params.timeout", "seconds above 0"),
        (lambda d: d["model_list"][0]["litellm_params"].update(max_retries=-2),
         "model_list[0].litellm_params.max_retries", "whole number >= 0"),
        (lambda d: d["model_list"][0]["litellm_params"].update(rpm=-5),
         "model_list[0].litellm_params.rpm", "greater than or equal to 0"),
        (lambda d: d["model_list"][0]["litellm_params"].update(api_base="127.0.0.1:8089/v1"),
         "model_list[0].litellm_params.api_base", "http:// or https:// URL"),
        (lambda d: d.update(router_setting=d.pop("router_settings")), "router_setting",
         "unknown top-level key; did you mean 'router_settings'?"),
        (lambda d: d.update(model_list=[]), "model_list", "at least 1"),
        (lambda d: d.pop("llmgw"), "llmgw", "Field required"),
        (lambda d: d["router_settings"].update(num_retries="many"), "router_settings.num_retries",
         "valid integer"),
        (lambda d: d["router_settings"].update(redis_url="http://127.0.0.1:6379"),
         "router_settings.redis_url", "redis://"),
    ],
)
def test_malformed_config_names_the_bad_key(mutate, key, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(bad(mutate), source="model_list.yaml")
    err = info.value
    assert err.key == key
    assert key in str(err) and words in str(err)
    assert str(err).startswith("model_list.yaml:")
    assert "\n" not in str(err)  # one bad key: one line


def test_litellm_top_level_sections_are_kept():
    data = bad(lambda d: d.update(litellm_settings={"drop_params": True},
                                  general_settings={"master_key": "os.environ/MASTER_KEY"}))
    assert config_from_dict(data).model_extra["litellm_settings"] == {"drop_params": True}


def test_env_references_pass_for_numbers_litellm_resolves():
    cfg = config_from_dict(bad(lambda d: d["model_list"][0]["litellm_params"].update(
        timeout="os.environ/MY_TIMEOUT", max_retries=3, api_base="os.environ/MY_BASE")))
    params = cfg.model_list[0].to_litellm()["litellm_params"]
    assert (params["timeout"], params["max_retries"], params["api_base"]) == (
        "os.environ/MY_TIMEOUT", 3, "os.environ/MY_BASE")


def test_fallback_chain_reaches_every_kind_of_fallback_once_in_order():
    groups = ["a", "b", "c", "d", "e", "f"]
    data = copy.deepcopy(GOOD)
    data["model_list"] = [{"model_name": g, "litellm_params": {"model": f"openai/{g}"},
                           "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}
                          for g in groups]
    data["llmgw"] = {"default_group": "a"}
    data["router_settings"] = {"fallbacks": [{"a": ["b"]}],
                               "context_window_fallbacks": [{"a": ["c"]}, {"b": ["d", "a"]}],
                               "content_policy_fallbacks": [{"c": ["e"]}],
                               "default_fallbacks": ["f"]}
    cfg = config_from_dict(data)
    assert cfg.fallback_chain("a") == ["a", "b", "f", "c", "d", "e"]
    assert cfg.fallback_chain("e") == ["e", "f"]
    data["router_settings"] = {"context_window_fallbacks": [{"*": ["d"]}]}
    assert config_from_dict(data).fallback_chain("b") == ["b", "d"]


def test_yaml_syntax_error_and_missing_file(tmp_path):
    p = tmp_path / "model_list.yaml"
    p.write_text("model_list: [\n  - {model_name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(p)
    with pytest.raises(ConfigError, match="No configuration file"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(p)


def test_env_overrides(tmp_path, monkeypatch):
    p = tmp_path / "custom.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv("LLMGW_CONFIG", str(p))
    monkeypatch.setenv("LLMGW_LEDGER_URL", "sqlite:////tmp/elsewhere.db")
    cfg = load_config()
    assert cfg.source == str(p)
    assert cfg.llmgw.ledger.url == "sqlite:////tmp/elsewhere.db"


def test_secret_values_resolve_env_references(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-from-env-987654")
    data = bad(lambda d: d["model_list"][1]["litellm_params"].update(api_key="os.environ/MY_KEY"))
    cfg = config_from_dict(data)
    assert set(cfg.secret_values()) == {"sk-abcdef123", "sk-from-env-987654"}
    assert cfg.model_list[1].api_key_env() == "MY_KEY"


def test_shared_router_state_settings_resolve_env_and_are_secret(monkeypatch):
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", "6390")
    monkeypatch.setenv("REDIS_PASSWORD", "redis-pass-4242")
    data = bad(lambda d: d["router_settings"].update(
        redis_host="os.environ/REDIS_HOST", redis_port="os.environ/REDIS_PORT",
        redis_password="os.environ/REDIS_PASSWORD"))
    settings = config_from_dict(data).router_settings
    kwargs = settings.router_kwargs()
    assert (kwargs["redis_host"], kwargs["redis_port"], kwargs["redis_password"]) == (
        "127.0.0.1", 6390, "redis-pass-4242")
    assert settings.shared_state_url() == "redis://:redis-pass-4242@127.0.0.1:6390"
    assert "redis-pass-4242" in config_from_dict(data).secret_values()
    # Unset variables leave the setting out, so the Router runs without shared state.
    monkeypatch.delenv("REDIS_HOST")
    assert config_from_dict(data).router_settings.shared_state_url() is None
    assert config_from_dict(GOOD).router_settings.shared_state_url() is None


def test_llmgw_redis_url_overrides_the_file_and_its_password_is_secret(tmp_path, monkeypatch):
    p = tmp_path / "custom.yaml"
    p.write_text(yaml.safe_dump(bad(lambda d: d["router_settings"].update(
        redis_url="redis://127.0.0.1:1/0"))))
    monkeypatch.setenv("LLMGW_REDIS_URL", "redis://:s3cret-redis-pw@127.0.0.1:6379/2")
    cfg = load_config(p)
    assert cfg.router_settings.router_kwargs()["redis_url"] == "redis://:s3cret-redis-pw@127.0.0.1:6379/2"
    assert "s3cret-redis-pw" in cfg.secret_values()


def test_llmgw_metrics_port_turns_the_exporter_on(tmp_path, monkeypatch):
    p = tmp_path / "custom.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    assert load_config(p).llmgw.metrics.enabled is False
    monkeypatch.setenv("LLMGW_METRICS_PORT", "9555")
    metrics = load_config(p).llmgw.metrics
    assert (metrics.enabled, metrics.host, metrics.port) == (True, "127.0.0.1", 9555)
    monkeypatch.setenv("LLMGW_METRICS_PORT", "ninety")
    with pytest.raises(ConfigError, match="LLMGW_METRICS_PORT='ninety' is not a port"):
        load_config(p)
