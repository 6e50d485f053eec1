"""Holds cover the bill (docs/architecture.md): whatever a provider bills a request, cache writes at
5 minutes or 1 hour included, is never more than the request held. A matrix over dialects,
caching and providers, each request writing its whole prompt to the cache and using every
output token it may."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from llmgw.config.loading import config_from_dict
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows

MAX_TOKENS = 64
PROMPT = "Summarize the release notes of every module, one line each. " * 30


def _config(openai_url: str, anthropic_url: str, ledger_url: str) -> Any:
    return config_from_dict({
        "model_list": [
            {"model_name": "anth", "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5", "api_base": anthropic_url,
                "api_key": ANTHROPIC_KEY},
             "model_info": {"id": "anth", "input_cost_per_token": 0.000003,
                            "output_cost_per_token": 0.000015}},  # cache rates: LiteLLM's map
            {"model_name": "oai", "litellm_params": {
                "model": "openai/gpt-5", "api_base": openai_url + "/v1", "api_key": OPENAI_KEY},
             "model_info": {"id": "oai", "input_cost_per_token": 0.00000125,
                            "output_cost_per_token": 0.00001}},
        ],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "anth", "ledger": {"url": ledger_url},
                  "cache": {"backend": "none"},
                  "budgets": {"projects": {"*": {"daily_usd": 100}}}},
    })


def _marked(ttl: str | None) -> dict[str, Any] | None:
    if ttl is None:
        return None
    return {"type": "ephemeral", **({"ttl": "1h"} if ttl == "1h" else {})}


async def _ask(gw: Any, dialect: str, group: str, ttl: str | None) -> None:
    mark = _marked(ttl)
    block = {"type": "text", "text": PROMPT, **({"cache_control": mark} if mark else {})}
    if dialect == "chat":
        await gw.complete("dev-1", "p", [{"role": "user", "content": [block]}],
                          model_group=group, max_tokens=MAX_TOKENS)
    elif dialect == "messages":
        await gw.anthropic_messages("dev-1", "p", {
            "model": group, "max_tokens": MAX_TOKENS, "system": [block],
            "messages": [{"role": "user", "content": "Go."}]})
    else:
        await gw.responses("dev-1", "p", {"model": group, "input": PROMPT,
                                         "max_output_tokens": MAX_TOKENS, "store": False})


CASES = [(d, g, t) for d in ("chat", "messages", "responses") for g in ("anth", "oai")
         for t in (None, "5m", "1h") if not (d == "responses" and t is not None)]


@pytest.mark.parametrize(("dialect", "group", "ttl"), CASES)
async def test_no_settled_cost_is_above_its_hold(sims, migrated_ledger_url, dialect, group, ttl):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    # the provider writes the whole prompt to the cache at the TTL asked, and answers with
    # every token allowed: the most it may bill
    write = {"cache_write_1h_tokens" if ttl == "1h" else "cache_write_5m_tokens": 10**6} \
        if ttl else {}
    for sim in sims:
        sim.set_plan(FaultPlan(completion_tokens=MAX_TOKENS, **write))
    gw = LLMGateway(_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    try:
        await _ask(gw, dialect, group, ttl)
    finally:
        await gw.aclose()
    (row,) = ledger_rows(migrated_ledger_url)
    assert row["status"] == "ok" and row["cost_micros"] > 0
    if ttl and group == "anth":  # the premium was really billed
        assert row["cache_write_tokens"] > 0
    engine = create_engine(migrated_ledger_url)
    try:
        with engine.connect() as conn:
            held, settled = conn.execute(text(
                "SELECT amount_micros, settled_micros FROM reservations")).one()
    finally:
        engine.dispose()
    assert settled == row["cost_micros"]
    assert settled <= held, f"{dialect}/{group}/{ttl}: settled {settled} above its hold {held}"
