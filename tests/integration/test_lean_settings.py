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
        "completion_tokens", "cache_read_tokens", "cost_micros", "saved_micros", "stream")


def _same(value: Any) -> Any:
    return PROVIDER_ID.sub("req_*", value) if isinstance(value, str) else value


def _config(sims: Any, ledger_url: str, general: dict[str, Any] | None = None,
            lean: bool = True) -> Any:
    openai_sim, anthropic_sim = sims
    # router_settings.router_general_settings as a user's model_list.yaml gives it
    extra = {} if general is None else {"router_general_settings": general}
    cfg = sim_config(openai_sim.base_url, anthropic_sim.base_url, ledger_url, **extra)
    cfg.llmgw.lean_litellm = lean
    return cfg


async def test_lean_defaults_are_applied_and_no_global_moves(sims, migrated_ledger_url):
    from llmgw._litellm import import_litellm
    from llmgw.gateway import LLMGateway
    from llmgw.routing.router import LEAN_GENERAL_SETTINGS

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
    from llmgw.routing.router import lean_general_settings

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


@pytest.mark.parametrize("general, lean", [({"async_only_mode": False}, True), (None, False)],
                         ids=["async_only_mode-off", "litellm-as-shipped"])
async def test_what_a_user_sees_is_the_same_with_lean_settings(sims, migrated_ledger_url,
                                                                general, lean):
    from llmgw.gateway import LLMGateway

    results, rows = [], []
    for cfg in (_config(sims, migrated_ledger_url),
                _config(sims, migrated_ledger_url, general, lean)):
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


def _limited_config(sims: Any, ledger_url: str, lean: bool) -> Any:
    """One group of three deployments: an rpm limit, a tpm limit in model_info, none. Each
    its own model name: LiteLLM shares a model_info limit among deployments of one model."""
    from llmgw.config.loading import config_from_dict
    from tests.support import sim_config_dict

    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, ledger_url)
    backup = next(d for d in data["model_list"] if d["model_name"] == "backup")
    data["model_list"] = [
        {**backup, "model_info": {**backup["model_info"], "id": f"dep-{name}", **info},
         "litellm_params": {**backup["litellm_params"], "model": f"openai/gpt-{name}", **params}}
        for name, params, info in (("rpm", {"rpm": 600}, {}), ("tpm", {}, {"tpm": 100_000}),
                                   ("free", {}, {}))]
    data["llmgw"].update(default_group="backup", lean_litellm=lean, agent_types={})
    data.get("router_settings", {}).pop("fallbacks", None)
    return config_from_dict(data)


async def test_lean_router_counts_usage_exactly_where_litellm_does(sims, migrated_ledger_url):
    """The LeanRouter skips LiteLLM's per-answer usage count only for a deployment with no
    limit; a deployment with an rpm or tpm limit is counted as LiteLLM counts it."""
    from litellm import Router

    from llmgw._litellm import lean_router_class
    from llmgw.gateway import LLMGateway

    seen = {}
    for lean in (True, False):
        gw = LLMGateway(_limited_config(sims, migrated_ledger_url, lean))
        try:
            router = gw.router
            assert isinstance(router, lean_router_class()) is lean
            assert isinstance(router, Router)
            keys = {}
            for dep in ("dep-rpm", "dep-tpm", "dep-free"):
                keys[dep] = await router._increment_deployment_usage(
                    deployment_id=dep, deployment_name=None, model_group="backup",
                    total_tokens=42, rpm_increment=1, parent_otel_span=None)
            counted = {dep: key is not None and await router.cache.async_get_cache(key) == 42
                       for dep, key in keys.items()}
            seen[lean] = counted
            if lean:
                assert {d: router.tracks_usage(d, "backup") for d in keys} == {
                    "dep-rpm": True, "dep-tpm": True, "dep-free": False}
        finally:
            await gw.aclose()
    assert seen[True] == seen[False] == {"dep-rpm": True, "dep-tpm": True, "dep-free": False}


async def test_lean_router_asks_again_when_a_deployment_is_replaced(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    def rpm_counted(router: Any, dep: str) -> int:
        """This minute's (or the last's) rpm count LiteLLM keeps for `dep`, in memory."""
        found = router.cache.in_memory_cache.cache_dict
        return sum(int(v) for k, v in found.items()
                   if k.startswith(f"global_router:{dep}:") and ":rpm:" in k)

    gw = LLMGateway(_limited_config(sims, migrated_ledger_url, True))
    try:
        router = gw.router
        free = next(d for d in router.model_list if d["model_info"]["id"] == "dep-free")
        router.set_model_list([free])
        done = await gw.complete("a", "p", HELLO, model_group="backup")
        assert (done.deployment, router.tracks_usage("dep-free", "backup")) == ("dep-free", False)
        assert rpm_counted(router, "dep-free") == 0  # no limit: nothing to count
        router.set_model_list([{**free, "litellm_params": {**free["litellm_params"], "rpm": 5}}])
        assert router.tracks_usage("dep-free", "backup") is True
        # LiteLLM counts an answer before the Router returns it (`make_call`).
        await gw.complete("a", "p", HELLO, model_group="backup")
        assert rpm_counted(router, "dep-free") == 1
    finally:
        await gw.aclose()
