"""The worst case a request reserves covers every group LiteLLM may send it to: its
`context_window_fallbacks` and `content_policy_fallbacks` too, not only `fallbacks`."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded
from llmgw.sim import FaultPlan
from llmgw.sim.faults import Fault
from tests.budgets.conftest import sums
from tests.support import OPENAI_KEY

ASK = [{"role": "user", "content": "Summarise the incident report in three lines."}]
MAX_TOKENS = 200
CHEAP = (Decimal("0.000001"), Decimal("0.000002"))  # dollars per input, output token
PRICEY = (CHEAP[0] * 100, CHEAP[1] * 100)
TOO_LONG = "This model's maximum context length is 8192 tokens. Please reduce the length."


def config(openai_url: str, ledger_url: str, fallback_kind: str,
           budgets: dict[str, Any]) -> dict[str, Any]:
    def deployment(group: str, model: str, prices: tuple[Decimal, Decimal]) -> dict[str, Any]:
        return {"model_name": group,
                "litellm_params": {"model": f"openai/{model}", "api_base": openai_url + "/v1",
                                   "api_key": OPENAI_KEY},
                "model_info": {"id": group, "input_cost_per_token": str(prices[0]),
                               "output_cost_per_token": str(prices[1])}}

    return {"model_list": [deployment("cheap", "cheap-sim", CHEAP),
                           deployment("pricey", "pricey-sim", PRICEY)],
            "router_settings": {"num_retries": 0, fallback_kind: [{"cheap": ["pricey"]}]},
            "llmgw": {"default_group": "cheap", "ledger": {"url": ledger_url},
                      "cache": {"backend": "none"}, "budgets": budgets}}


def worst_case(prompt_tokens: int, margin: float, prices: tuple[Decimal, Decimal]) -> int:
    """The worst case (docs/budgets.md): prompt tokens with the margin at the input price plus max_tokens
    at the output price, rounded up to a micro-dollar."""
    prompt = math.ceil(prompt_tokens * margin)
    return math.ceil((prompt * prices[0] + MAX_TOKENS * prices[1]) * 1_000_000)


def reservation(url: str) -> tuple[int, int | None]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT amount_micros, settled_micros FROM reservations"))
            amount, settled = row.one()
            return amount, settled
    finally:
        engine.dispose()


@pytest.mark.parametrize("fallback_kind", ["context_window_fallbacks", "content_policy_fallbacks"])
async def test_estimate_and_reservation_price_the_pricier_fallback(sims, migrated_ledger_url,
                                                                    fallback_kind):
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    # The cheap deployment says the prompt is too long; LiteLLM moves the call to `pricey`.
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=400, message=TOO_LONG,
                                                model="cheap-sim")],
                                  prompt_tokens=5, completion_tokens=MAX_TOKENS))
    cfg = config_from_dict(config(openai_sim.base_url, migrated_ledger_url, fallback_kind,
                                  {"projects": {"*": {"daily_usd": 10}}}))
    gw = LLMGateway(cfg)
    try:
        est = await gw.estimate("a", "p", ASK, max_tokens=MAX_TOKENS)
        margin = cfg.llmgw.budgets.prompt_margin
        expected = worst_case(est.prompt_tokens, margin, PRICEY)
        assert expected > 50 * worst_case(est.prompt_tokens, margin, CHEAP)
        assert est.fallback_groups == ["pricey"]
        assert est.worst_case_micros == expected
        if fallback_kind == "context_window_fallbacks":
            done = await gw.complete("a", "p", ASK, max_tokens=MAX_TOKENS)
            assert (done.model_group, done.deployment) == ("pricey", "pricey")
            assert reservation(migrated_ledger_url) == (expected, done.cost_micros)
            assert done.cost_micros <= expected  # the hold covered what was billed
            s = sums(migrated_ledger_url)
            assert s["counters"][("project", "p", "day")] == (done.cost_micros, 0)
    finally:
        await gw.aclose()


async def test_a_cap_between_the_two_prices_refuses_before_any_provider_call(
        sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    cfg = config_from_dict(config(openai_sim.base_url, migrated_ledger_url,
                                  "context_window_fallbacks", {}))
    gw = LLMGateway(cfg)
    try:
        prompt = (await gw.estimate("a", "p", ASK, max_tokens=MAX_TOKENS)).prompt_tokens
    finally:
        await gw.aclose()
    margin = cfg.llmgw.budgets.prompt_margin
    cheap, pricey = worst_case(prompt, margin, CHEAP), worst_case(prompt, margin, PRICEY)
    cap = (cheap + pricey) // 2
    data = config(openai_sim.base_url, migrated_ledger_url, "context_window_fallbacks",
                  {"per_request_usd": str(Decimal(cap) / 1_000_000)})
    gw = LLMGateway(config_from_dict(data))
    try:
        with pytest.raises(BudgetExceeded) as info:
            await gw.complete("a", "p", ASK, max_tokens=MAX_TOKENS)
    finally:
        await gw.aclose()
    assert (info.value.window, info.value.limit_micros, info.value.requested_micros) == (
        "request", cap, pricey)
    assert openai_sim.requests == []
