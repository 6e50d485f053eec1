"""Bad input through a real LLMGateway, on SQLite and PostgreSQL: every case is an
`InvalidRequest` before anything is reserved, called or written (docs/architecture.md).

The gateway has budgets and the answer cache on, so each step that could trip over a bad
value (the cache's eligibility check, the reservation, the ledger write) is reachable."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from llmgw.config.loading import config_from_dict
from llmgw.errors import InvalidRequest
from llmgw.sim import FaultPlan
from tests.budgets.conftest import budget_config

ASK = [{"role": "user", "content": "Plan the release."}]

# (what the call passes, the parameter the error must name)
BAD: list[tuple[dict[str, Any], str]] = [
    (dict(temperature="hot"), "temperature"),
    (dict(temperature=[1]), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(temperature=-3), "temperature"),
    (dict(max_completion_tokens=-5), "max_completion_tokens"),
    (dict(max_completion_tokens="x"), "max_completion_tokens"),
    (dict(max_tokens=True), "max_tokens"),
    (dict(max_tokens=100, max_completion_tokens=200), "max_completion_tokens"),
    (dict(n=5), "n"),
    (dict(project_id="proj\x00a"), "project_id"),
    (dict(agent_id="dev\x00"), "agent_id"),
    (dict(agent_type="qa\x00"), "agent_type"),
    (dict(metadata={"x": math.nan}), "metadata"),
    (dict(metadata={"x": math.inf}), "metadata"),
    (dict(metadata={"x": "a\x00b"}), "metadata"),
    (dict(metadata={"k\x00": 1}), "metadata"),
    (dict(metadata={"deep": [{"x": -math.inf}]}), "metadata"),
    (dict(messages=[{"role": "user", "content": "a\x00b"}]), "messages"),
    # A per-call price would be registered process-wide by LiteLLM: every later request of
    # the model would be charged it. A mock answer would be cached as the project's answer.
    (dict(input_cost_per_token=0, output_cost_per_token=0), "input_cost_per_token"),
    (dict(mock_response="POISON"), "mock_response"),
    (dict(stream_options={"include_usage": False}), "stream_options"),
]


def _id(case: tuple[dict[str, Any], str]) -> str:
    return "-".join(f"{k}={v!r}" for k, v in case[0].items())[:60]


@pytest.fixture
async def budgeted_gateway(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(prompt_tokens=10, completion_tokens=20))
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                         {"projects": {"*": {"daily_usd": "1"}}})
    data["llmgw"]["cache"] = {"backend": "memory"}
    gw = LLMGateway(config_from_dict(data))
    yield gw
    await gw.aclose()


def ledger_state(url: str) -> dict[str, Any]:
    """Rows, reservations and counters' reserved amounts, straight from SQL."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "usage_rows": conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one(),
                "reservations": conn.execute(
                    text("SELECT COUNT(*) FROM reservations")).scalar_one(),
                "open": conn.execute(text(
                    "SELECT COUNT(*) FROM reservations WHERE state = 'open'")).scalar_one(),
                "reserved": [r[0] for r in conn.execute(
                    text("SELECT reserved_micros FROM budget_counters"))],
            }
    finally:
        engine.dispose()


def _call(case: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": "dev-1", "project_id": "proj-a", "messages": ASK, "model_group": "solo",
            **case}


@pytest.mark.parametrize("case", BAD, ids=[_id(c) for c in BAD])
async def test_bad_input_is_refused_before_anything_is_reserved_called_or_written(
        budgeted_gateway, sims, migrated_ledger_url, case):
    gw = budgeted_gateway
    kwargs, name = case
    with pytest.raises(InvalidRequest) as done:
        await gw.complete(**_call(kwargs))
    assert name in str(done.value)
    with pytest.raises(InvalidRequest) as streamed:
        async for _ in gw.stream(**_call(kwargs)):
            pass
    assert name in str(streamed.value)
    with pytest.raises(InvalidRequest) as estimated:
        await gw.estimate(**_call(kwargs))
    assert name in str(estimated.value)
    await gw.drain()
    assert all(sim.requests == [] for sim in sims)
    state = ledger_state(migrated_ledger_url)
    assert (state["usage_rows"], state["reservations"]) == (0, 0)
    assert all(reserved == 0 for reserved in state["reserved"])


async def test_good_values_of_the_same_parameters_are_answered(budgeted_gateway, sims,
                                                              migrated_ledger_url):
    """The same gateway takes in-range values: the refusals above are the validation's."""
    openai_sim, _ = sims
    good = dict(temperature=0, max_completion_tokens=50, top_p=1, n=1, seed=7, stop=["\n"],
                presence_penalty=-2, frequency_penalty=2.0,
                metadata={"ticket": "REL-1", "score": 0.5, "tags": ["a", "b"], "none": None})
    first = await budgeted_gateway.complete(**_call(good))
    again = [e async for e in budgeted_gateway.stream(**_call(good))]
    assert first.cost_micros > 0
    assert again[-1].completion.cached  # the cache's temperature check took a number
    assert len(openai_sim.requests) == 1
    body = openai_sim.requests[0].json
    assert (body["temperature"], body["seed"], body["stop"]) == (0, 7, ["\n"])
    state = ledger_state(migrated_ledger_url)
    assert (state["usage_rows"], state["open"]) == (2, 0)
    assert all(reserved == 0 for reserved in state["reserved"])
