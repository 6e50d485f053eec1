"""Simulators for the whole session; a fresh gateway (and Router) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from llmgw.sim import AnthropicSim, FaultPlan, OpenAISim
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, sim_config


@pytest.fixture(scope="session")
def openai_sim() -> Iterator[OpenAISim]:
    with OpenAISim(api_key=OPENAI_KEY) as sim:
        yield sim


@pytest.fixture(scope="session")
def anthropic_sim() -> Iterator[AnthropicSim]:
    with AnthropicSim(api_key=ANTHROPIC_KEY) as sim:
        yield sim


@pytest.fixture
def sims(openai_sim: OpenAISim, anthropic_sim: AnthropicSim):
    for sim in (openai_sim, anthropic_sim):
        sim.set_plan(FaultPlan())
        sim.reset()
    yield openai_sim, anthropic_sim
    for sim in (openai_sim, anthropic_sim):
        sim.set_plan(FaultPlan())
        sim.reset()


@pytest.fixture
async def gateway(sims, migrated_ledger_url: str) -> AsyncIterator:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    yield gw
    await gw.aclose()
