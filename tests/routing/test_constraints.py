"""Per-call constraints: `max_cost_usd` keeps to deployments whose worst case fits, `prefer`
orders them, agent types set both as defaults; the ledger row says why (docs/routing.md)."""

from __future__ import annotations

import json

import pytest

from llmgw.errors import BudgetExceeded, InvalidRequest
from llmgw.sim import FaultPlan
from tests.routing.fleet import dep, fleet, hops
from tests.support import ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

ASK = [{"role": "user", "content": "Summarise this week's risks."}]
# Worst cases at max_tokens=100: hr-pricey ~$0.0078, hr-cheap ~$0.0002, lo-cheap ~$0.00002.
PRICEY = ("0.000015", "0.000075")
CHEAP = ("0.000001", "0.000002")
TINY = ("0.0000001", "0.0000002")


def fleet_of(sims, ledger_url: str, **llmgw):
    openai_sim, anthropic_sim = sims
    deployments = [dep("high", "hr-pricey", anthropic_sim, "claude-pricey", PRICEY, order=1),
                   dep("high", "hr-cheap", openai_sim, "gpt-cheap", CHEAP, order=1),
                   dep("low", "lo-cheap", openai_sim, "gpt-tiny", TINY)]
    return fleet(deployments, ledger_url, fallbacks=[{"high": ["low"]}], num_retries=0,
                 llmgw=llmgw or None)


@pytest.fixture
async def gw(sims, migrated_ledger_url: str):
    from llmgw.gateway import LLMGateway

    gw = LLMGateway(fleet_of(sims, migrated_ledger_url))
    yield gw
    await gw.aclose()


def _meta(row: dict) -> dict:
    m = row["metadata"]
    return json.loads(m) if isinstance(m, str) else m


def routing_notes(url: str) -> list[dict]:
    return [_meta(r)["llmgw"].get("routing") for r in ledger_rows(url)]


async def test_max_cost_uses_only_deployments_whose_worst_case_fits(
        gw, sims, migrated_ledger_url: str) -> None:
    openai_sim, anthropic_sim = sims
    for _ in range(4):
        done = await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                                 max_cost_usd=0.001)
        assert hops(done) == [("hr-cheap", "ok")]
    assert anthropic_sim.requests == []
    note = routing_notes(migrated_ledger_url)[0]
    assert note["chosen"] == "hr-cheap" and "<= max 1000" in note["why"]
    assert note["eligible"] == ["hr-cheap", "lo-cheap"] and "hr-pricey" in note["excluded"]


async def test_a_group_with_nothing_that_fits_goes_straight_to_a_fallback_that_does(
        gw, sims, migrated_ledger_url: str) -> None:
    openai_sim, anthropic_sim = sims
    done = await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                             max_cost_usd=0.0001)
    assert hops(done) == [("lo-cheap", "ok")] and done.model == "openai/gpt-tiny"
    assert [r.model for r in openai_sim.requests] == ["gpt-tiny"]


async def test_nothing_fits_refuses_before_any_provider_call(
        gw, sims, migrated_ledger_url: str) -> None:
    openai_sim, anthropic_sim = sims
    with pytest.raises(BudgetExceeded) as caught:
        await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                          max_cost_usd=0.00001)
    err = caught.value
    assert (err.scope, err.window, err.limit_micros) == ("request", "request", 10)
    assert "max_cost_usd" in err.hint and err.requested_micros > 10
    assert openai_sim.requests == [] and anthropic_sim.requests == []
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["error_class"]) == ("refused", "BudgetExceeded")
    note = _meta(row)["llmgw"]["routing"]
    assert note["eligible"] == [] and set(note["excluded"]) == {"hr-pricey", "hr-cheap",
                                                                 "lo-cheap"}


async def test_prefer_cheapest_picks_the_cheapest_and_its_sibling_when_it_fails(
        gw, sims, migrated_ledger_url: str) -> None:
    openai_sim, anthropic_sim = sims
    for _ in range(3):
        done = await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                                 prefer="cheapest")
        assert hops(done) == [("hr-cheap", "ok")]
    openai_sim.set_plan(FaultPlan.error(503, model="gpt-cheap"))
    done = await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                             prefer="cheapest")
    assert hops(done) == [("hr-cheap", "error"), ("hr-pricey", "ok")]
    assert routing_notes(migrated_ledger_url)[-1]["chosen"] == "hr-pricey"


async def test_prefer_fastest_picks_the_faster_once_both_are_measured(
        gw, sims, migrated_ledger_url: str) -> None:
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan.latency(0.2))  # hr-cheap is slow, hr-pricey answers at once
    served = []
    for _ in range(5):
        done = await gw.complete("a", "p", ASK, model_group="high", max_tokens=100,
                                 prefer="fastest")
        served.append(done.deployment)
    # each is measured once (the cheaper first), then the fastest is kept
    assert served == ["hr-cheap", "hr-pricey", "hr-pricey", "hr-pricey", "hr-pricey"]


async def test_agent_type_defaults_in_the_mapping_form(sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    cfg = fleet_of(sims, migrated_ledger_url, agent_types={
        "frugal": {"group": "high", "max_cost_usd": 0.0001},
        "architect": "high"})
    gw = LLMGateway(cfg)
    try:
        done = await gw.complete("a", "p", ASK, agent_type="frugal", max_tokens=100)
        assert done.deployment == "lo-cheap"
        # the call's own value wins over the type's default
        done = await gw.complete("a", "p", ASK, agent_type="frugal", max_tokens=100,
                                 max_cost_usd=0.001, prefer="cheapest")
        assert done.deployment == "hr-cheap"
        done = await gw.complete("a", "p", ASK, agent_type="architect", max_tokens=100)
        assert done.model_group == "high"
    finally:
        await gw.aclose()


@pytest.mark.parametrize("bad", [{"max_cost_usd": 0}, {"max_cost_usd": "1"},
                                 {"prefer": "smartest"}])
async def test_bad_constraints_are_invalid_requests(gw, bad, migrated_ledger_url: str) -> None:
    with pytest.raises(InvalidRequest):
        await gw.complete("a", "p", ASK, model_group="high", **bad)
    assert ledger_rows(migrated_ledger_url) == []
