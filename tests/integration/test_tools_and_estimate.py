"""Tool calls round trip through two providers; estimate equals the reservation complete makes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded, InvalidRequest
from llmgw.sim import FaultPlan, ToolCall
from llmgw.types import StreamDone, ToolCallDelta
from tests.budgets.conftest import budget_config

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def make_gateway(sims, url, budgets=None):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    return LLMGateway(config_from_dict(budget_config(openai_sim.base_url, anthropic_sim.base_url,
                                                     url, budgets or {})))


@pytest.mark.parametrize(("group", "sim_index"), [("backup", 0), ("primary", 1)])
async def test_tool_call_round_trip(sims, migrated_ledger_url, group, sim_index):
    sim = sims[sim_index]
    gw = make_gateway(sims, migrated_ledger_url)
    try:
        sim.set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                  arguments={"city": "Paris"})))
        first = await gw.complete("dev-1", "p", ASK, model_group=group, tools=TOOLS,
                                  tool_choice="auto")
        assert first.finish_reason == "tool_calls" and first.content in (None, "")
        [call] = first.tool_calls
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

        sim.set_plan(FaultPlan(answer="It is 18 degrees in Paris."))
        follow_up = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "content": '{"celsius": 18}'}]
        final = await gw.complete("dev-1", "p", follow_up, model_group=group, tools=TOOLS)
        assert final.content == "It is 18 degrees in Paris."

        sim.set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                  arguments={"city": "Lyon"})))
        events = [e async for e in gw.stream("dev-1", "p", ASK, model_group=group, tools=TOOLS)]
        assert any(isinstance(e, ToolCallDelta) and e.name == "get_weather" for e in events)
        done = events[-1]
        assert isinstance(done, StreamDone)
        assert json.loads(done.completion.tool_calls[0]["function"]["arguments"]) == {
            "city": "Lyon"}
    finally:
        await gw.aclose()
    # the tool result reached the provider in its own wire format
    body = sim.requests[1].json
    if group == "backup":  # OpenAI
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": call["id"],
                                        "content": '{"celsius": 18}'}
    else:  # Anthropic: a user turn holding a tool_result block
        block = body["messages"][-1]["content"][0]
        assert (block["type"], block["tool_use_id"]) == ("tool_result", call["id"])


async def test_bad_tools_are_refused_before_any_io(sims, migrated_ledger_url):
    gw = make_gateway(sims, migrated_ledger_url)
    try:
        with pytest.raises(InvalidRequest, match="function tools"):
            await gw.complete("a", "p", ASK, tools=[{"type": "mcp", "server_url": "x"}])
    finally:
        await gw.aclose()
    assert all(s.requests == [] for s in sims)


async def test_estimate_equals_the_reservation_complete_makes(sims, migrated_ledger_url):
    gw = make_gateway(sims, migrated_ledger_url, {"projects": {"p": {"daily_usd": "0.05"}}})
    try:
        est = await gw.estimate("arch-1", "p", ASK, agent_type="software-architect",
                                max_tokens=500)
        assert sims[0].requests == [] and sims[1].requests == []  # no provider call
        await gw.complete("arch-1", "p", ASK, agent_type="software-architect", max_tokens=500)
        big = await gw.estimate("arch-1", "p", ASK, model_group="primary", max_tokens=4000)
        with pytest.raises(BudgetExceeded):
            await gw.complete("arch-1", "p", ASK, model_group="primary", max_tokens=4000)
    finally:
        await gw.aclose()
    engine = create_engine(migrated_ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        [reserved] = conn.execute(text("SELECT amount_micros FROM reservations")).scalars().all()
    engine.dispose()
    assert est.worst_case_micros == reserved
    assert (est.model_group, est.fallback_groups, est.max_tokens) == ("primary", ["backup"], 500)
    # worst case: the dearest prices of the chain (primary's $3/$15 per M)
    assert {d.deployment for d in est.deployments} == {"primary-anthropic", "backup-openai"}
    assert max(d.worst_case_micros for d in est.deployments) <= est.worst_case_micros
    assert [(b.scope, b.period, b.would_exceed) for b in est.budgets] == [("project", "day", False)]
    assert not est.would_be_refused and big.would_be_refused
    assert big.budgets[0].spent_micros > 0  # it saw the first request's spend


async def test_tool_definitions_count_in_the_reservation(sims, migrated_ledger_url):
    # A model reads the tools' definitions as prompt: the hold must cover them.
    from llmgw._litellm import import_litellm

    gw = make_gateway(sims, migrated_ledger_url, {"projects": {"p": {"daily_usd": "0.05"}}})
    named = {"type": "function", "function": {"name": "get_weather"}}
    try:
        plain = await gw.estimate("arch-1", "p", ASK, model_group="primary", max_tokens=50)
        est = await gw.estimate("arch-1", "p", ASK, model_group="primary", max_tokens=50,
                                tools=TOOLS, tool_choice=named)
        sims[1].set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                      arguments={"city": "Paris"})))
        await gw.complete("arch-1", "p", ASK, model_group="primary", max_tokens=50,
                          tools=TOOLS, tool_choice=named)
        model = gw.config.groups()["primary"][0].litellm_params.model
    finally:
        await gw.aclose()
    assert est.prompt_tokens == import_litellm().token_counter(
        model=model, messages=ASK, tools=TOOLS, tool_choice=named) > plain.prompt_tokens + 30
    assert est.worst_case_micros > plain.worst_case_micros
    engine = create_engine(migrated_ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        [reserved] = conn.execute(text("SELECT amount_micros FROM reservations")).scalars().all()
    engine.dispose()
    assert reserved == est.worst_case_micros
