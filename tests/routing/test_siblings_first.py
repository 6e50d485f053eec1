"""A retry goes to a healthy sibling before any fallback group (docs/routing.md).

LiteLLM's retry may pick the deployment that just failed again after a 5xx or 429; the demo's
Anthropic outage went hr-anthropic ✗ -> hr-anthropic ✗ -> fast-response while hr-openai was
up. The fleets mirror model_list.yaml: its retry settings, Anthropic first in its group."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.sim import Fault, FaultPlan
from tests.routing.fleet import dep, fleet, fleet_dict, hops, run_workers

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

# model_list.yaml's retry settings: one retry, a 503 counts as one failure of two allowed.
DEMO_RETRIES = dict(num_retries=1, allowed_fails=2, cooldown_time=30,
                    retry_policy={"RateLimitErrorRetries": 1, "InternalServerErrorRetries": 1,
                                  "TimeoutErrorRetries": 0},
                    fallbacks=[{"high": ["fast"]}])
ASK = [{"role": "user", "content": "Propose the service boundaries for payments."}]


def demo_fleet(openai_sim, anthropic_sim) -> list[dict]:
    # `order` makes LiteLLM pick the Anthropic deployment first, as latency-based routing did
    # in the demo before the outage.
    return [dep("high", "hr-anthropic", anthropic_sim, "claude-sonnet", order=1),
            dep("high", "hr-openai", openai_sim, "gpt-41", order=2),
            dep("fast", "fr-anthropic", anthropic_sim, "claude-haiku", order=1),
            dep("fast", "fr-openai", openai_sim, "gpt-41-mini", order=2)]


async def test_an_outage_is_answered_by_the_sibling_not_a_worse_group(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(503, message="Overloaded"))
    gw = LLMGateway(fleet(demo_fleet(openai_sim, anthropic_sim), migrated_ledger_url,
                          **DEMO_RETRIES))
    try:
        done = await gw.complete("arch-1", "checkout", ASK, model_group="high")
    finally:
        await gw.aclose()
    assert hops(done) == [("hr-anthropic", "error"), ("hr-openai", "ok")]
    assert [r.model for r in anthropic_sim.requests] == ["claude-sonnet"]


async def test_each_sibling_of_a_large_group_is_tried_before_the_fallback(
        sims, migrated_ledger_url: str) -> None:
    # Three deployments and num_retries 0 in the file: the group still retries twice.
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=500, model="gpt-a"),
                                          Fault(kind="http_error", status=429, model="gpt-b")]))
    deployments = [dep("big", "big-a", openai_sim, "gpt-a", order=1),
                   dep("big", "big-b", openai_sim, "gpt-b", order=2),
                   dep("big", "big-c", openai_sim, "gpt-c", order=3),
                   dep("worse", "worse-a", anthropic_sim, "claude-w")]
    gw = LLMGateway(fleet(deployments, migrated_ledger_url, num_retries=0,
                          fallbacks=[{"big": ["worse"]}]))
    try:
        done = await gw.complete("dev-1", "proj", ASK, model_group="big")
    finally:
        await gw.aclose()
    assert hops(done) == [("big-a", "error"), ("big-b", "error"), ("big-c", "ok")]
    assert anthropic_sim.requests == []


async def test_the_group_falls_back_once_every_sibling_failed(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(503))
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=503, model="gpt-41")]))
    gw = LLMGateway(fleet(demo_fleet(openai_sim, anthropic_sim), migrated_ledger_url,
                          **DEMO_RETRIES))
    try:
        done = await gw.complete("arch-1", "checkout", ASK, model_group="high")
    finally:
        await gw.aclose()
    assert hops(done)[:2] == [("hr-anthropic", "error"), ("hr-openai", "error")]
    assert hops(done)[-1] == ("fr-openai", "ok")
    assert {d for d, _ in hops(done)} <= {"hr-anthropic", "hr-openai", "fr-anthropic",
                                          "fr-openai"}


def test_two_processes_sharing_redis_answer_from_the_sibling(
        sims, migrated_ledger_url: str, redis_servers, tmp_path: Path) -> None:
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(503, message="Overloaded"))
    config = fleet_dict(demo_fleet(openai_sim, anthropic_sim), migrated_ledger_url,
                        redis_url=redis_servers().url, **DEMO_RETRIES)
    outputs = run_workers(config, tmp_path, 2, "high", "3", "1")
    lines = [line for out in outputs for line in out]
    assert len(lines) == 6
    for line in lines:
        assert line["deployment"] == "hr-openai"
        # The sibling answers; the failed deployment is tried at most once per request (and
        # not at all once the shared cooldown took it out).
        assert line["attempts"] in ([["hr-anthropic", "error"], ["hr-openai", "ok"]],
                                    [["hr-openai", "ok"]])
    assert all(r.model == "claude-sonnet" for r in anthropic_sim.requests)
