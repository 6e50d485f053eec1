"""Every fault kind x every provider, through LLMGateway and LiteLLM's real provider code.

Each provider's simulator serves group `sim-<provider>`, whose fallback is `rescue` (a clean
OpenAI simulator). A fault ends either in the rescue's answer, with the failed hop recorded
under its error class, or in the right typed error (401 never fails over)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.errors import AuthenticationFailed
from llmgw.ledger.migrate import upgrade
from llmgw.sim import Fault, FaultPlan
from llmgw.sim.openai import OpenAISim
from llmgw.sim.registry import PROVIDERS
from tests.support import ledger_rows

KEY = "sk-matrix-SECRET-42424242"
NAMES = list(PROVIDERS)
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Status?"}]

# fault -> (expected outcome, error class of the failed hop)
FAULTS: dict[str, tuple[Fault, str, str | None]] = {
    "429": (Fault(kind="http_error", status=429, retry_after=3), "fallback", "RateLimited"),
    "500": (Fault(kind="http_error", status=500), "fallback", "ProviderUnavailable"),
    "503": (Fault(kind="http_error", status=503), "fallback", "ProviderUnavailable"),
    "401": (Fault(kind="http_error", status=401), "error", "AuthenticationFailed"),
    "latency": (Fault(kind="latency", delay_s=0.05), "answer", None),
    "timeout": (Fault(kind="timeout"), "fallback", "ProviderUnavailable"),
    "drop": (Fault(kind="drop"), "fallback", "ProviderUnavailable"),
    "malformed": (Fault(kind="malformed"), "fallback", "ProviderUnavailable"),
}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    try:
        for name in NAMES:
            provider = PROVIDERS[name]
            started[name] = provider.load()(api_key=KEY if provider.needs_api_key else None).start()
        started["rescue"] = OpenAISim(api_key=KEY).start()
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.fixture
def matrix_config(sims, tmp_path: Path):
    for sim in sims.values():
        sim.set_plan(FaultPlan())
        sim.reset()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    model_list = [PROVIDERS[n].deployment(sims[n].base_url, KEY if PROVIDERS[n].needs_api_key
                                          else None) for n in NAMES]
    model_list.append({"model_name": "rescue", "litellm_params": {
        "model": "openai/rescue", "api_base": sims["rescue"].base_url + "/v1", "api_key": KEY},
        "model_info": {"id": "rescue-openai", "input_cost_per_token": 0.000001,
                       "output_cost_per_token": 0.000002}})
    data = {"model_list": model_list,
            "router_settings": {"num_retries": 0,
                                "fallbacks": [{PROVIDERS[n].group: ["rescue"]} for n in NAMES]},
            "llmgw": {"default_group": "rescue", "ledger": {"url": url}}}
    return config_from_dict(data), url


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("provider", NAMES)
async def test_fault_ends_in_fallback_or_typed_error(sims, matrix_config, provider, fault_name):
    from llmgw.gateway import LLMGateway

    fault, outcome, error_class = FAULTS[fault_name]
    cfg, url = matrix_config
    sims[provider].set_plan(FaultPlan(faults=[fault]))
    group = PROVIDERS[provider].group
    gw = LLMGateway(cfg)
    try:
        if outcome == "error":
            with pytest.raises(AuthenticationFailed) as info:
                await gw.complete("qa-1", "matrix", HELLO, model_group=group, timeout=2)
            assert info.value.deployment == group and KEY not in str(info.value)
            assert sims["rescue"].requests == []  # never failed over
        else:
            done = await gw.complete("qa-1", "matrix", HELLO, model_group=group, timeout=2)
            assert done.content
            served = "rescue" if outcome == "fallback" else group
            assert done.model_group == served
    finally:
        await gw.aclose()
    rows = ledger_rows(url)
    assert len({r["request_id"] for r in rows}) == 1
    if outcome == "answer":
        assert [(r["status"], r["deployment_id"]) for r in rows] == [("ok", group)]
        assert rows[0]["latency_ms"] >= 50
    elif outcome == "fallback":
        assert [(r["status"], r["deployment_id"], r["error_class"]) for r in rows] == [
            ("error", group, error_class), ("ok", "rescue-openai", None)]
    else:
        assert [(r["status"], r["deployment_id"], r["error_class"]) for r in rows] == [
            ("error", group, error_class)]
    assert all(KEY not in str(r) for r in rows)
