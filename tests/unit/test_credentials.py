"""Deployments whose credentials are known bad (llmgw.routing.credentials): an unset key variable, or
a deployment cooling down after its provider refused the key, refuses its whole group."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.routing.credentials import CredentialGuard, unset_key_variables

VAR = "LLMGW_UNIT_TEST_KEY_VAR"


def config(first_key: str = "sk-unit-inline-key", second_key: str = "sk-unit-other") -> Config:
    def dep(group: str, dep_id: str, key: str) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {"model": "openai/gpt-4.1", "api_key": key},
                "model_info": {"id": dep_id, "input_cost_per_token": "0.000001",
                               "output_cost_per_token": "0.000002"}}

    return config_from_dict({
        "model_list": [dep("pair", "pair-1", first_key), dep("pair", "pair-2", second_key),
                       dep("solo", "solo-1", "sk-unit-solo")],
        "llmgw": {"default_group": "pair", "ledger": {"url": "sqlite:///unused.db"},
                  "cache": {"backend": "none"}}})


class CooldownCache:
    """LiteLLM's cooldown store, as the Router keeps it: id -> (status, when, how long)."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = entries
        self.asked: list[list[str]] = []

    async def async_get_active_cooldowns(self, model_ids: list[str],
                                         parent_otel_span: Any) -> list[tuple[str, Any]]:
        self.asked.append(list(model_ids))
        return [(i, self.entries[i]) for i in model_ids if i in self.entries]


class Router:
    def __init__(self, cooling: dict[str, int] | None = None) -> None:
        now = time.time()
        self.cooldown_cache = CooldownCache({
            dep_id: {"status_code": status, "timestamp": now, "cooldown_time": 60}
            for dep_id, status in (cooling or {}).items()})


def healthy(*ids: str) -> list[dict[str, Any]]:
    return [{"model_info": {"id": i}} for i in ids]


def test_an_unset_key_variable_is_found_and_a_set_one_is_not(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(VAR, raising=False)
    cfg = config(f"os.environ/{VAR}")
    assert unset_key_variables(cfg.model_list) == {"pair-1": VAR}
    monkeypatch.setenv(VAR, "sk-now-set")
    assert unset_key_variables(cfg.model_list) == {}


def test_an_unset_key_refuses_its_whole_group_even_with_a_healthy_sibling(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.delenv(VAR, raising=False)
    router = Router()
    guard = CredentialGuard(config(f"os.environ/{VAR}"), router)
    refusal = asyncio.run(guard.refusal("pair", healthy("pair-1", "pair-2")))
    assert refusal is not None and refusal.deployment.id == "pair-1"
    assert VAR in refusal.reason and "not sent" in refusal.reason
    assert asyncio.run(guard.refusal("solo", healthy("solo-1"))) is None
    with caplog.at_level(logging.WARNING, logger="llmgw.routing.router"):
        guard.warn_unset()
    (record,) = caplog.records
    assert "pair-1" in record.getMessage() and VAR in record.getMessage()


def test_the_first_deployment_with_an_unset_key_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.delenv(VAR + "_2", raising=False)
    cfg = config(f"os.environ/{VAR}", f"os.environ/{VAR}_2")
    refusal = asyncio.run(CredentialGuard(cfg, Router()).refusal("pair", healthy()))
    assert refusal is not None and refusal.deployment.id == "pair-1"


@pytest.mark.parametrize("status", [401, 403])
def test_a_deployment_cooling_down_after_its_key_was_refused_refuses_the_group(status: int):
    router = Router(cooling={"pair-1": status})
    guard = CredentialGuard(config(), router)
    refusal = asyncio.run(guard.refusal("pair", healthy("pair-2")))
    assert refusal is not None and refusal.deployment.id == "pair-1"
    assert f"HTTP {status}" in refusal.reason
    assert router.cooldown_cache.asked == [["pair-1"]]  # only what is missing is looked up


def test_a_deployment_cooling_down_for_another_reason_does_not_refuse():
    router = Router(cooling={"pair-1": 503})
    guard = CredentialGuard(config(), router)
    assert asyncio.run(guard.refusal("pair", healthy("pair-2"))) is None


def test_with_every_deployment_healthy_the_cooldowns_are_not_read():
    router = Router(cooling={"pair-1": 401})
    guard = CredentialGuard(config(), router)
    assert asyncio.run(guard.refusal("pair", healthy("pair-1", "pair-2"))) is None
    assert router.cooldown_cache.asked == []


def test_the_guard_does_not_keep_its_router_alive():
    router = Router(cooling={"pair-1": 401})
    guard = CredentialGuard(config(), router)
    del router
    assert asyncio.run(guard.refusal("pair", healthy("pair-2"))) is None
