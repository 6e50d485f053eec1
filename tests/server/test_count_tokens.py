"""The official `anthropic` SDK's `messages.count_tokens` against `llmgw serve` over the
simulators: Anthropic deployments count at Anthropic's endpoint (the sim's), others with
LiteLLM's tokenizer; a count is never charged nor recorded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import litellm
import pytest
from litellm.llms.anthropic.pass_through.adapters.transformation import (
    LiteLLMAnthropicMessagesAdapter,
)

from llmgw.config.loading import config_from_dict
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from tests.server.conftest import open_reservations, port_of, start_server, stop_server
from tests.support import ledger_rows, sim_config_dict

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

COUNT_PATH = "/v1/messages/count_tokens"
ASK = [{"role": "user", "content": "What is the weather in Paris today?"}]
WEATHER = [{"name": "get_weather", "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]


def client(base_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)


def sim_counts(sim) -> list[Any]:
    return [r for r in sim.responses if r.path == COUNT_PATH]


def tokenizer_count(model: str, **request: Any) -> int:
    """LiteLLM's own count, computed here: its adapter's OpenAI shape, then token_counter."""
    translated, _ = LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(
        {"model": model, **request})
    return litellm.token_counter(model=model, messages=translated["messages"],
                                 tools=translated.get("tools"),
                                 tool_choice=translated.get("tool_choice"))


def assert_nothing_charged(ledger_url: str) -> None:
    assert ledger_rows(ledger_url) == []
    assert open_reservations(ledger_url) == 0


def test_anthropic_group_counts_at_anthropics_endpoint(running, sims):
    _, anthropic_sim = sims
    raw = client(running.base_url, running.key()).messages.with_raw_response.count_tokens(
        model="primary", system="Be brief.", messages=ASK, tools=WEATHER,
        tool_choice={"type": "auto"})
    counted = raw.parse()
    (answer,) = sim_counts(anthropic_sim)
    assert answer.status == 200 and counted.input_tokens == answer.prompt_tokens > 0
    assert raw.headers["x-llmgw-count-source"] == "provider"
    assert raw.headers["x-llmgw-deployment"] == "primary-anthropic"
    assert raw.headers["x-llmgw-model-group"] == "primary"
    (sent,) = [r for r in anthropic_sim.requests if r.path == COUNT_PATH]
    assert sent.json["model"] == "claude-sim"  # the deployment's model, not the group's name
    assert sent.json["system"] == "Be brief." and sent.json["tools"] == WEATHER
    assert sent.json["tool_choice"] == {"type": "auto"}
    assert not [r for r in anthropic_sim.requests if r.path == "/v1/messages"]
    assert_nothing_charged(running.ledger_url)


def test_openai_group_counts_with_litellms_tokenizer(running, sims):
    openai_sim, anthropic_sim = sims
    raw = client(running.base_url, running.key()).messages.with_raw_response.count_tokens(
        model="backup", system="Be brief.", messages=ASK, tools=WEATHER)
    expected = tokenizer_count("openai/gpt-sim", system="Be brief.", messages=ASK, tools=WEATHER)
    assert raw.parse().input_tokens == expected
    # the tools are counted: without them the count is smaller
    assert expected > tokenizer_count("openai/gpt-sim", system="Be brief.", messages=ASK)
    assert raw.headers["x-llmgw-count-source"] == "tokenizer"
    assert raw.headers["x-llmgw-deployment"] == "backup-openai"
    assert openai_sim.requests == [] and anthropic_sim.requests == []
    assert_nothing_charged(running.ledger_url)


def test_auto_counts_on_the_agent_types_group(running, sims):
    _, anthropic_sim = sims
    key = running.key(agent="arch-1", agent_type="software-architect")  # -> primary
    raw = client(running.base_url, key).messages.with_raw_response.count_tokens(
        model="auto", messages=ASK)
    assert raw.headers["x-llmgw-model-group"] == "primary"
    (answer,) = sim_counts(anthropic_sim)
    assert raw.parse().input_tokens == answer.prompt_tokens


def test_an_any_agent_key_counts_for_the_agent_its_header_names(running, sims):
    key = running.key(agent=None)
    ac = anthropic.Anthropic(base_url=running.base_url, api_key=key, max_retries=0,
                             default_headers={"x-llmgw-agent": "arch-7",
                                              "x-llmgw-agent-type": "software-architect"})
    raw = ac.messages.with_raw_response.count_tokens(model="auto", messages=ASK)
    assert raw.headers["x-llmgw-model-group"] == "primary"
    assert raw.parse().input_tokens == sim_counts(sims[1])[0].prompt_tokens
    with pytest.raises(anthropic.BadRequestError):  # no agent named: as for /v1/messages
        client(running.base_url, key).messages.count_tokens(model="primary", messages=ASK)


def test_a_refused_provider_count_falls_back_to_the_tokenizer(running, sims):
    _, anthropic_sim = sims  # group authg's deployment has a key the sim refuses
    raw = client(running.base_url, running.key()).messages.with_raw_response.count_tokens(
        model="authg", messages=ASK)
    (refused,) = sim_counts(anthropic_sim)
    assert refused.status == 401
    assert raw.headers["x-llmgw-count-source"] == "tokenizer"
    assert raw.parse().input_tokens == tokenizer_count("anthropic/claude-auth", messages=ASK)
    assert_nothing_charged(running.ledger_url)


def test_every_project_is_counted_by_the_provider_itself(running, sims):
    _, anthropic_sim = sims  # nothing is cached: the second project's count is asked again
    counts = [client(running.base_url, running.key(project=p)).messages.count_tokens(
        model="primary", messages=ASK).input_tokens for p in ("proj-a", "proj-b")]
    answers = sim_counts(anthropic_sim)
    assert len(answers) == 2 and counts == [a.prompt_tokens for a in answers]
    assert_nothing_charged(running.ledger_url)


def test_fields_llmgw_does_not_read_pass_through(running, sims):
    _, anthropic_sim = sims
    thinking = {"type": "enabled", "budget_tokens": 2048}
    counted = client(running.base_url, running.key()).messages.count_tokens(
        model="primary", messages=ASK, thinking=thinking, extra_body={"future_field": {"x": 1}})
    (sent,) = [r for r in anthropic_sim.requests if r.path == COUNT_PATH]
    assert sent.json["thinking"] == thinking
    assert counted.input_tokens == sim_counts(anthropic_sim)[0].prompt_tokens


def test_content_blocks_go_to_the_provider_as_sent(running, sims):
    _, anthropic_sim = sims
    blocks = [{"role": "user", "content": [
        {"type": "text", "text": "Long context here", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "and a question?"}]}]
    client(running.base_url, running.key()).messages.count_tokens(model="primary",
                                                                  messages=blocks)
    (sent,) = [r for r in anthropic_sim.requests if r.path == COUNT_PATH]
    assert sent.json["messages"] == blocks


def test_the_callers_betas_go_along_with_the_token_counting_beta(running, sims):
    _, anthropic_sim = sims
    client(running.base_url, running.key()).beta.messages.count_tokens(
        model="primary", messages=ASK, betas=["context-management-2025-06-27"])
    (sent,) = [r for r in anthropic_sim.requests if r.path == COUNT_PATH]
    assert set(sent.headers["anthropic-beta"].split(",")) == {
        "context-management-2025-06-27", "token-counting-2024-11-01"}


def test_unknown_model_is_404(running, sims):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(running.base_url, running.key()).messages.count_tokens(model="no-such-group",
                                                                      messages=ASK)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "no-such-group" in caught.value.body["error"]["message"]
    assert sims[1].requests == []


def test_missing_key_is_401_in_anthropics_shape(running):
    r = httpx.post(running.base_url + COUNT_PATH, json={"model": "primary", "messages": ASK})
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"


def test_an_admin_key_is_403(running):
    with pytest.raises(anthropic.PermissionDeniedError):
        client(running.base_url, running.admin_key()).messages.count_tokens(model="primary",
                                                                            messages=ASK)


@pytest.mark.parametrize("body", [
    {"model": "primary", "messages": []},
    {"model": "primary"},
    {"messages": ASK},
    {"model": "primary", "messages": [{"role": "system", "content": "hi"}]},
    {"model": "primary", "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"model": "primary", "messages": ASK, "system": 12},
    {"model": "primary", "messages": ASK, "tools": [{"description": "no name"}]},
])
def test_a_bad_body_is_400(running, sims, body):
    r = httpx.post(running.base_url + COUNT_PATH, json=body,
                   headers={"x-api-key": running.key()})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert sims[1].requests == []


@contextmanager
def serve(config: dict[str, Any], ledger_url: str) -> Iterator[tuple[str, str]]:
    """An app over `config`; yields its base URL and a key of project proj-a."""
    app = create_app(config_from_dict(config), ServerSettings(key_cache_s=0))
    server = start_server(app)
    engine = make_engine(ledger_url)
    try:
        key = ApiKeyStore(engine).create(project_id="proj-a", agent_id="dev-1").secret
        yield f"http://127.0.0.1:{port_of(server)}", key
    finally:
        stop_server(server)
        engine.dispose()


def _env_keyed_config(sims, ledger_url: str, variable: str) -> dict[str, Any]:
    openai_sim, anthropic_sim = sims
    config = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, ledger_url)
    config["model_list"][0]["litellm_params"]["api_key"] = f"os.environ/{variable}"
    return config


def test_the_deployments_key_is_read_from_its_environment_variable(sims, migrated_ledger_url,
                                                                   monkeypatch):
    monkeypatch.setenv("LLMGW_TEST_COUNT_KEY", sims[1].api_key)
    config = _env_keyed_config(sims, migrated_ledger_url, "LLMGW_TEST_COUNT_KEY")
    with serve(config, migrated_ledger_url) as (base_url, key):
        raw = client(base_url, key).messages.with_raw_response.count_tokens(model="primary",
                                                                            messages=ASK)
    assert raw.headers["x-llmgw-count-source"] == "provider"
    assert raw.parse().input_tokens == sim_counts(sims[1])[0].prompt_tokens


def test_an_unset_key_variable_is_never_replaced_by_another_key(sims, migrated_ledger_url,
                                                                 monkeypatch):
    monkeypatch.delenv("LLMGW_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", sims[1].api_key)  # LiteLLM's default: not sent
    config = _env_keyed_config(sims, migrated_ledger_url, "LLMGW_TEST_UNSET_KEY")
    with serve(config, migrated_ledger_url) as (base_url, key):
        raw = client(base_url, key).messages.with_raw_response.count_tokens(model="primary",
                                                                            messages=ASK)
    assert raw.headers["x-llmgw-count-source"] == "tokenizer"
    assert raw.parse().input_tokens == tokenizer_count("anthropic/claude-sim", messages=ASK)
    assert sims[1].requests == []


def test_a_client_model_name_resolves_through_the_aliases(sims, migrated_ledger_url):
    """Needs `llmgw.model_aliases` (being added to the config and AgentDirectory.resolve)."""
    openai_sim, anthropic_sim = sims
    config = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url)
    config["llmgw"]["model_aliases"] = {"claude-*": "primary"}
    with serve(config, migrated_ledger_url) as (base_url, key):
        raw = client(base_url, key).messages.with_raw_response.count_tokens(
            model="claude-sonnet-4-5", messages=ASK)
    assert raw.headers["x-llmgw-model-group"] == "primary"
    assert raw.headers["x-llmgw-count-source"] == "provider"
    assert raw.parse().input_tokens == sim_counts(anthropic_sim)[0].prompt_tokens
    assert_nothing_charged(migrated_ledger_url)


def test_an_unreachable_endpoint_falls_back_to_the_tokenizer(sims, migrated_ledger_url, caplog):
    openai_sim, anthropic_sim = sims
    config = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url)
    config["model_list"][0]["litellm_params"]["api_base"] = "http://127.0.0.1:1"  # refused
    with caplog.at_level(logging.WARNING, logger="llmgw.pipeline.count_tokens"), \
            serve(config, migrated_ledger_url) as (base_url, key):
        raw = client(base_url, key).messages.with_raw_response.count_tokens(model="primary",
                                                                            messages=ASK)
    assert raw.headers["x-llmgw-count-source"] == "tokenizer"
    assert raw.parse().input_tokens == tokenizer_count("anthropic/claude-sim", messages=ASK)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "llmgw.pipeline.count_tokens"]
    assert "primary-anthropic" in warning and "no answer" in warning
    assert anthropic_sim.api_key not in warning
    assert_nothing_charged(migrated_ledger_url)
