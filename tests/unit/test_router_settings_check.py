"""`router_settings` is checked at load against LiteLLM's own Router: every key is one of
`litellm.Router.__init__`'s parameters and known domains are enforced, so a typo fails as a
`ConfigError` naming the key, never as a `TypeError` when the gateway starts."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmgw._litellm import import_litellm
from llmgw.config.loading import config_from_dict, load_config
from llmgw.config.router_settings import (
    AllowedFailsPolicy,
    GeneralSettings,
    PreCallCheck,
    RetryPolicy,
    RouterSettings,
    RoutingStrategy,
)
from llmgw.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def config(**router_settings: Any) -> dict[str, Any]:
    deployment = {"litellm_params": {"model": "openai/gpt-x", "api_base": "http://127.0.0.1:9/v1",
                                     "api_key": "sk-test-0000"},
                  "model_info": {"input_cost_per_token": 0.000001,
                                 "output_cost_per_token": 0.000002}}
    return {"model_list": [{"model_name": name, **deployment} for name in ("cheap", "big")],
            "router_settings": router_settings, "llmgw": {"default_group": "cheap"}}


# -- the static copies equal the installed LiteLLM ------------------------------------------

def test_every_router_setting_is_a_router_init_parameter_and_back():
    litellm = import_litellm()
    params = [p for p in inspect.signature(litellm.Router.__init__).parameters if p != "self"]
    assert list(RouterSettings.model_fields) == params


def test_value_domains_equal_litellms():
    import_litellm()
    from litellm.router_utils.routing_groups import VALID_ROUTING_STRATEGIES
    from litellm.types.router import AllowedFailsPolicy as LiteLLMAllowedFails
    from litellm.types.router import OptionalPreCallChecks
    from litellm.types.router import RetryPolicy as LiteLLMRetryPolicy
    from litellm.types.router import RouterGeneralSettings as LiteLLMGeneralSettings

    assert set(typing.get_args(RoutingStrategy)) == set(VALID_ROUTING_STRATEGIES)
    assert set(typing.get_args(PreCallCheck)) == set(
        typing.get_args(typing.get_args(OptionalPreCallChecks)[0]))
    assert list(RetryPolicy.model_fields) == list(LiteLLMRetryPolicy.model_fields)
    assert list(AllowedFailsPolicy.model_fields) == list(LiteLLMAllowedFails.model_fields)
    assert list(GeneralSettings.model_fields) == list(LiteLLMGeneralSettings.model_fields)


def test_settings_that_pass_the_check_build_litellms_router():
    from llmgw.redact import Redactor
    from llmgw.routing.router import build_router

    cfg = config_from_dict(config(
        routing_strategy="least-busy", routing_strategy_args={"ttl": 60},
        num_retries=2, max_fallbacks=3, timeout=30, stream_timeout=20.5, retry_after=0,
        allowed_fails=1, cooldown_time=10, disable_cooldowns=False, client_ttl=600,
        retry_policy={"RateLimitErrorRetries": 2, "AuthenticationErrorRetries": 0},
        model_group_retry_policy={"big": {"TimeoutErrorRetries": 1}},
        allowed_fails_policy={"RateLimitErrorAllowedFails": 5},
        fallbacks=[{"cheap": ["big"]}], context_window_fallbacks=[{"cheap": ["big"]}],
        content_policy_fallbacks=[{"*": ["big"]}], default_fallbacks=["big"],
        model_group_alias={"small": "cheap"}, optional_pre_call_checks=["prompt_caching"],
        enable_pre_call_checks=True, debug_level="INFO", default_litellm_params={"metadata": {}}))
    router = build_router(cfg, Redactor())
    assert router.routing_strategy == "least-busy"
    assert (router.num_retries, router.max_fallbacks, router.cooldown_time) == (2, 3, 10)
    assert router.context_window_fallbacks == [{"cheap": ["big"]}]
    assert router.retry_policy.RateLimitErrorRetries == 2


# -- bad settings fail at load, naming the key --------------------------------------------

@pytest.mark.parametrize(("settings", "key", "words"), [
    ({"num_retrys": 2}, "router_settings.num_retrys", "did you mean 'num_retries'"),
    ({"routing_strategy": "fastest-please"}, "router_settings.routing_strategy",
     "'latency-based-routing'"),
    ({"routing_strategy": "latency-based"}, "router_settings.routing_strategy",
     "did you mean 'latency-based-routing'"),
    ({"num_retries": -1}, "router_settings.num_retries", "greater than or equal to 0"),
    ({"num_retries": 1.5}, "router_settings.num_retries", "integer"),
    ({"num_retries": True}, "router_settings.num_retries", "integer"),
    ({"timeout": 0}, "router_settings.timeout", "greater than 0"),
    ({"stream_timeout": -3}, "router_settings.stream_timeout", "greater than 0"),
    ({"timeout": float("inf")}, "router_settings.timeout", "finite"),
    ({"cooldown_time": 0}, "router_settings.cooldown_time", "disable_cooldowns"),
    ({"allowed_fails": -2}, "router_settings.allowed_fails", "greater than or equal to 0"),
    ({"max_fallbacks": "many"}, "router_settings.max_fallbacks", "integer"),
    ({"retry_policy": {"RateLimitErrorRetry": 1}},
     "router_settings.retry_policy.RateLimitErrorRetry", "did you mean 'RateLimitErrorRetries'"),
    ({"retry_policy": {"TimeoutErrorRetries": -1}},
     "router_settings.retry_policy.TimeoutErrorRetries", "greater than or equal to 0"),
    ({"retry_policy": {"AuthenticationErrorRetries": 2}},
     "router_settings.retry_policy.AuthenticationErrorRetries", "never retries bad credentials"),
    ({"model_group_retry_policy": {"big": {"AuthenticationErrorRetries": 1}}},
     "router_settings.model_group_retry_policy.big.AuthenticationErrorRetries", "must be 0"),
    ({"model_group_retry_policy": {"ghost": {"TimeoutErrorRetries": 1}}},
     "router_settings.model_group_retry_policy", "'ghost' is not a model group"),
    ({"allowed_fails_policy": {"RateLimitAllowedFails": 1}},
     "router_settings.allowed_fails_policy.RateLimitAllowedFails",
     "did you mean 'RateLimitErrorAllowedFails'"),
    ({"fallbacks": [{"cheap": "big"}]}, "router_settings.fallbacks[0].cheap", "valid list"),
    ({"fallbacks": [{"cheap": ["big"], "big": ["cheap"]}]}, "router_settings.fallbacks[0]",
     "one group per entry"),
    ({"fallbacks": {"cheap": ["big"]}}, "router_settings.fallbacks", "valid list"),
    ({"context_window_fallbacks": [{"cheap": ["huge"]}]},
     "router_settings.context_window_fallbacks[0]", "'huge' is not a model group"),
    ({"content_policy_fallbacks": [{"ghost": ["big"]}]},
     "router_settings.content_policy_fallbacks[0]", "'ghost' is not a model group"),
    ({"default_fallbacks": ["ghost"]}, "router_settings.default_fallbacks", "not a model group"),
    ({"model_group_alias": {"gpt-4": "ghost"}}, "router_settings.model_group_alias.gpt-4",
     "not a model group"),
    ({"optional_pre_call_checks": ["prompt_cache"]}, "router_settings.optional_pre_call_checks[0]",
     "did you mean 'prompt_caching'"),
    ({"debug_level": "TRACE"}, "router_settings.debug_level", "'DEBUG' or 'INFO'"),
    ({"model_list": []}, "router_settings.model_list", "top-level model_list"),
    ({"fallback_access_check": "x"}, "router_settings.fallback_access_check", "llmgw sets it"),
    ({"plugins": ["my.plugin"]}, "router_settings.plugins", "Python objects"),
    ({"redis_db": -1}, "router_settings.redis_db", "greater than or equal to 0"),
])
def test_bad_router_settings_fail_at_load_naming_the_key(tmp_path, settings, key, words):
    path = tmp_path / "model_list.yaml"
    path.write_text(yaml.safe_dump(config(**settings)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert key in str(info.value) and words in str(info.value)


def test_every_bad_key_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(num_retrys=1, routing_strategy="fastest-please", timeout=-1))
    text = str(info.value)
    for key in ("router_settings.num_retrys", "router_settings.routing_strategy",
                "router_settings.timeout"):
        assert f"  {key}: " in text


def test_the_shipped_litellm_config_still_loads():
    cfg = load_config(REPO / "model_list.yaml")
    kwargs = cfg.router_settings.router_kwargs()
    assert kwargs["routing_strategy"] == "latency-based-routing"
    assert kwargs["retry_policy"] == {"RateLimitErrorRetries": 1, "InternalServerErrorRetries": 1,
                                      "TimeoutErrorRetries": 0}
    assert (kwargs["num_retries"], kwargs["allowed_fails"], kwargs["cooldown_time"],
            kwargs["timeout"]) == (1, 2, 30, 120)


# -- the CLI says it in one line ----------------------------------------------------------

@pytest.mark.parametrize(("settings", "key"), [
    ({"num_retrys": 2}, "router_settings.num_retrys"),
    ({"routing_strategy": "fastest-please"}, "router_settings.routing_strategy"),
])
def test_llmgw_chat_with_a_bad_router_setting_prints_one_line(tmp_path, settings, key):
    from llmgw.ledger.migrate import upgrade

    data = config(**settings)
    data["llmgw"]["ledger"] = {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}
    upgrade(data["llmgw"]["ledger"]["url"])  # a ready ledger: only the config is wrong
    (tmp_path / "model_list.yaml").write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    proc = subprocess.run([sys.executable, "-m", "llmgw.cli", "chat", "hello"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and key in lines[0], proc.stderr
