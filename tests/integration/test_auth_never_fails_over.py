"""Bad credentials never fail over, on the first request or any later one.

A 401 or 403 raises AuthenticationFailed naming the deployment, with retries configured
and with healthy siblings in its group. LiteLLM then cools a 401's deployment down; while
it cools, every request routed to its group raises the same error (never a sibling's or a
fallback group's answer, never "in cooldown"). A key variable that is not set is named
when the gateway is built and refused at request time, never sent as another key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.errors import AuthenticationFailed
from llmgw.ledger.migrate import upgrade
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY, ledger_rows, sim_config_dict

HELLO = [{"role": "user", "content": "hello"}]
UNSET_VAR = "LLMGW_TEST_AUTH_UNSET_KEY"
# Models that only a deployment that must never answer would be sent.
NEVER_SERVES = {"gpt-good", "gpt-sim", "claude-sim"}


def _dep(group: str, dep_id: str, model: str, api_base: str, key: str,
         **params: Any) -> dict[str, Any]:
    return {"model_name": group,
            "litellm_params": {"model": model, "api_base": api_base, "api_key": key, **params},
            "model_info": {"id": dep_id, "input_cost_per_token": Decimal("0.000001"),
                           "output_cost_per_token": Decimal("0.000002")}}


def _config(openai_url: str, anthropic_url: str, ledger_url: str, **router_settings: Any):
    """The shared simulator groups plus:
    pair401: a wrong key (order 1) and a good sibling (order 2), falling back to backup;
    pair403: a deployment the provider forbids (order 1) and a good sibling, -> backup;
    alone: a wrong key, no sibling, no fallback (and solo's fallback);
    envg: an unset key variable, -> backup."""
    data = sim_config_dict(openai_url, anthropic_url, ledger_url, **router_settings)
    v1 = openai_url + "/v1"
    data["model_list"] += [
        _dep("pair401", "pair-bad", "openai/gpt-bad", v1, WRONG_KEY, order=1),
        _dep("pair401", "pair-good", "openai/gpt-good", v1, OPENAI_KEY, order=2),
        _dep("pair403", "pair-forbidden", "openai/gpt-forbidden", v1, OPENAI_KEY, order=1),
        _dep("pair403", "pair403-good", "openai/gpt-good", v1, OPENAI_KEY, order=2),
        _dep("alone", "alone-bad", "anthropic/claude-alone", anthropic_url, WRONG_KEY),
        _dep("envg", "env-anthropic", "anthropic/claude-env", anthropic_url,
             f"os.environ/{UNSET_VAR}"),
    ]
    data["router_settings"]["fallbacks"] += [
        {"pair401": ["backup"]}, {"pair403": ["backup"]}, {"envg": ["backup"]},
        {"solo": ["alone"]}]
    return config_from_dict(data)


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def gw(sims, sqlite_ledger, monkeypatch) -> AsyncIterator[Any]:
    from llmgw.gateway import LLMGateway

    monkeypatch.delenv(UNSET_VAR, raising=False)
    openai_sim, anthropic_sim = sims
    gateway = LLMGateway(_config(openai_sim.base_url, anthropic_sim.base_url, sqlite_ledger,
                                 num_retries=2))
    yield gateway
    await gateway.aclose()


def _served_models(sims) -> set[str]:
    return {r.model for sim in sims for r in sim.requests} - {None}


@pytest.mark.parametrize(("group", "bad", "status"), [
    ("authg", "auth-anthropic", 401),      # one deployment, a fallback group
    ("autho", "auth-openai", 401),
    ("alone", "alone-bad", 401),           # no fallback: never "in cooldown"
    ("pair401", "pair-bad", 401),          # a healthy sibling and a fallback group
    ("pair403", "pair-forbidden", 403),    # 403: LiteLLM retries it on the sibling
])
async def test_bad_credentials_never_fail_over_on_any_later_request(gw, sims, sqlite_ledger,
                                                                    group, bad, status):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.error(403, model="gpt-forbidden"))
    errors = []
    for _ in range(4):
        with pytest.raises(AuthenticationFailed) as info:
            await gw.complete("dev-1", "proj", HELLO, model_group=group)
        errors.append(info.value)

    assert [e.deployment for e in errors] == [bad] * 4
    assert all("Check the API key of deployment " + bad in str(e) for e in errors)
    assert errors[0].status_code == status
    assert not any("cooldown" in str(e) for e in errors)
    assert not _served_models(sims) & NEVER_SERVES  # no sibling, no fallback group answered
    rows = ledger_rows(sqlite_ledger)
    assert len({r["request_id"] for r in rows}) == 4
    assert {(r["status"], r["error_class"], r["deployment_id"]) for r in rows} == {
        ("error", "AuthenticationFailed", bad)}


async def test_a_refused_deployment_cooling_down_is_named_without_a_provider_call(gw, sims,
                                                                                  sqlite_ledger):
    with pytest.raises(AuthenticationFailed):
        await gw.complete("dev-1", "proj", HELLO, model_group="pair401")
    health = {h.deployment_id: h for h in await gw.health(timeout=5)}
    assert health["pair-bad"].cooling_down and health["pair-bad"].cooldown_status == 401
    sent = len(sims[0].requests)

    with pytest.raises(AuthenticationFailed) as info:
        await gw.complete("dev-1", "proj", HELLO, model_group="pair401")
    assert len(sims[0].requests) == sent  # refused here: the key is not sent again
    assert "pair-bad" in str(info.value) and "HTTP 401" in str(info.value)
    [attempt] = info.value.attempts
    assert (attempt.deployment, attempt.error_class) == ("pair-bad", "AuthenticationFailed")


async def test_a_fallback_into_a_refused_group_names_its_deployment(gw, sims, sqlite_ledger):
    openai_sim, _ = sims
    with pytest.raises(AuthenticationFailed):
        await gw.complete("dev-1", "proj", HELLO, model_group="alone")  # cools alone-bad
    openai_sim.set_plan(FaultPlan.error(500, model="solo-sim"))
    with pytest.raises(AuthenticationFailed) as info:  # solo: 500 -> its fallback, alone
        await gw.complete("dev-1", "proj", HELLO, model_group="solo")
    assert info.value.deployment == "alone-bad"
    *outage, refused = [(a.deployment, a.error_class) for a in info.value.attempts]
    assert outage and set(outage) == {("solo-openai", "ProviderUnavailable")}  # with retries
    assert refused == ("alone-bad", "AuthenticationFailed")


async def test_an_unset_key_variable_is_named_at_build_in_health_and_on_each_call(
        sims, sqlite_ledger, monkeypatch, caplog):
    from llmgw.gateway import LLMGateway

    monkeypatch.delenv(UNSET_VAR, raising=False)
    # LiteLLM would otherwise send the provider's default variable instead: another key.
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    openai_sim, anthropic_sim = sims
    with caplog.at_level(logging.WARNING, logger="llmgw.routing.router"):
        gw = LLMGateway(_config(openai_sim.base_url, anthropic_sim.base_url, sqlite_ledger,
                                num_retries=2))
    try:
        [warning] = [r for r in caplog.records if UNSET_VAR in r.getMessage()]
        assert warning.levelno == logging.WARNING and "env-anthropic" in warning.getMessage()

        health = {h.deployment_id: h for h in await gw.health(timeout=5)}
        assert health["env-anthropic"].status == "down"
        assert UNSET_VAR in (health["env-anthropic"].error or "")

        for _ in range(2):
            with pytest.raises(AuthenticationFailed) as info:
                await gw.complete("dev-1", "proj", HELLO, model_group="envg")
            assert info.value.deployment == "env-anthropic"
            assert f"{UNSET_VAR} is not set" in str(info.value)
    finally:
        await gw.aclose()
    assert not _served_models(sims)  # neither the default key nor the fallback group was used
    rows = ledger_rows(sqlite_ledger)
    assert [(r["status"], r["error_class"], r["deployment_id"]) for r in rows] == [
        ("error", "AuthenticationFailed", "env-anthropic")] * 2
    assert all(f"{UNSET_VAR} is not set" in r["error_message"] for r in rows)
    assert all(ANTHROPIC_KEY not in repr(r) for r in rows)
