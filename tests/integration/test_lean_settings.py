"""The lean LiteLLM settings `build_router` turns on: applied by default, the user's own value
wins, no process-wide LiteLLM switch moves, and what a user sees (answers, ledger rows,
costs, failed attempts, errors) is the same with them on and off."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmgw.errors import AuthenticationFailed
from llmgw.sim import FaultPlan
from tests.support import ledger_rows, sim_config

HELLO = [{"role": "user", "content": "hello"}]
# Process-wide switches build_router must leave as the process had them.
GLOBALS = ("turn_off_message_logging", "disable_end_user_cost_tracking",
           "disable_aiohttp_transport", "disable_token_counter")
# What a user sees in a ledger row; ids, times and latencies differ run to run.
# The simulators name each answer with a fresh provider request id.
PROVIDER_ID = re.compile(r"req_[0-9a-f]+")
SEEN = ("attempt", "agent_id", "project_id", "model_group", "deployment_id", "provider",
        "model", "status", "error_class", "error_message", "prompt_tokens",
        "completion_tokens", "cached_tokens", "cost_micros", "saved_micros", "stream")


def _same(value: Any) -> Any:
    return PROVIDER_ID.sub("req_*", value) if isinstance(value, str) else value


def _config(sims: Any, ledger_url: str, general: dict[str, Any] | None = None) -> Any:
    openai_sim, anthropic_sim = sims
    if general is None:
        return sim_config(openai_sim.base_url, anthropic_sim.base_url, ledger_url)
    # router_settings.router_general_settings as a user's model_list.yaml gives it
    return sim_config(openai_sim.base_url, anthropic_sim.base_url, ledger_url,
                      router_general_settings=general)


async def test_lean_defaults_are_applied_and_no_global_moves(sims, migrated_ledger_url):
    from llmgw._litellm import import_litellm
    from llmgw.gateway import LLMGateway
    from llmgw.router import LEAN_GENERAL_SETTINGS

    litellm = import_litellm()
    before = {name: getattr(litellm, name) for name in GLOBALS}
    gw = LLMGateway(_config(sims, migrated_ledger_url))
    try:
        general = gw.router.router_general_settings
        for name, value in LEAN_GENERAL_SETTINGS.items():
            assert getattr(general, name) == value
        assert general.async_only_mode is True
        assert {name: getattr(litellm, name) for name in GLOBALS} == before
        done = await gw.complete("a", "p", HELLO, model_group="backup")
        assert done.content
    finally:
        await gw.aclose()


async def test_users_router_general_settings_win_field_by_field(sims, migrated_ledger_url):
    from litellm.types.router import RouterGeneralSettings

    from llmgw.gateway import LLMGateway
    from llmgw.router import lean_general_settings

    gw = LLMGateway(_config(sims, migrated_ledger_url, {"async_only_mode": False}))
    try:
        assert gw.router.router_general_settings.async_only_mode is False
    finally:
        await gw.aclose()
    # A field the user did not set keeps llmgw's default; one they set keeps theirs.
    merged = lean_general_settings(RouterGeneralSettings(pass_through_all_models=True))
    assert (merged.async_only_mode, merged.pass_through_all_models) == (True, True)
    merged = lean_general_settings(RouterGeneralSettings(async_only_mode=False))
    assert merged.async_only_mode is False


async def _scenario(gw: Any, sims: Any) -> list[Any]:
    """An answer, a fallback after a 500 and a refused key: what each call returned."""
    openai_sim, anthropic_sim = sims
    seen: list[Any] = []
    done = await gw.complete("a", "p", HELLO, model_group="backup")
    seen.append((done.content, done.cost_micros, [(a.status, a.deployment) for a in done.attempts]))
    anthropic_sim.set_plan(FaultPlan.error(500, times=1))
    done = await gw.complete("a", "p", HELLO, model_group="primary")
    anthropic_sim.set_plan(FaultPlan())
    seen.append((done.content, done.cost_micros,
                 [(a.status, a.deployment, a.error_class, a.status_code) for a in done.attempts]))
    with pytest.raises(AuthenticationFailed) as info:
        await gw.complete("a", "p", HELLO, model_group="authg")
    err = info.value  # its message names the request id, which differs run to run
    seen.append((type(err).__name__, err.deployment, err.status_code, getattr(err, "hint", None),
                 [(a.deployment, a.error_class, _same(a.error_message)) for a in err.attempts]))
    return seen


@pytest.mark.parametrize("general", [{"async_only_mode": False}], ids=["litellm-default"])
async def test_what_a_user_sees_is_the_same_with_lean_settings(sims, migrated_ledger_url,
                                                                general):
    from llmgw.gateway import LLMGateway

    results, rows = [], []
    for cfg in (_config(sims, migrated_ledger_url), _config(sims, migrated_ledger_url, general)):
        for sim in sims:
            sim.reset()
        done_before = len(ledger_rows(migrated_ledger_url))
        gw = LLMGateway(cfg)
        try:
            results.append(await _scenario(gw, sims))
        finally:
            await gw.aclose()
        rows.append([{k: _same(r[k]) for k in SEEN}
                     for r in ledger_rows(migrated_ledger_url)[done_before:]])
    lean, default = results
    assert lean == default
    assert rows[0] == rows[1]
    # The fallback's failed hop and the refused key are rows in both runs.
    statuses = [(r["deployment_id"], r["status"]) for r in rows[0]]
    assert ("primary-anthropic", "error") in statuses
    assert ("auth-anthropic", "error") in statuses
    assert all(r["cost_micros"] > 0 for r in rows[0] if r["status"] == "ok")
