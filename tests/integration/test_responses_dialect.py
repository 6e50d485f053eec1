"""The OpenAI Responses dialect on the one pipeline (docs/architecture.md): `Router.aresponses`
natively to OpenAI deployments and through LiteLLM's chat bridge to the others, with llmgw's
continuations, budgets, rows and cost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.errors import UnknownResponse
from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from llmgw.types import StreamDone, WireEvent
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows

IN, OUT, READ = Decimal("0.00000125"), Decimal("0.00001"), Decimal("0.000000125")
EXEC = [{"type": "function", "name": "exec_command", "description": "Run a command",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]
CODEX_TOOLS = [{"type": "namespace", "name": "shell", "tools": EXEC}, {"type": "web_search"}]


def _deployment(group: str, dep_id: str, model: str, base: str, key: str,
                prices: tuple[Decimal, Decimal, Decimal]) -> dict[str, Any]:
    return {"model_name": group, "litellm_params": {"model": model, "api_base": base,
                                                    "api_key": key},
            "model_info": {"id": dep_id, "input_cost_per_token": float(prices[0]),
                           "output_cost_per_token": float(prices[1]),
                           "cache_read_input_token_cost": float(prices[2])}}


def config(openai_url: str, anthropic_url: str, ledger_url: str):
    anth = (Decimal("0.000003"), Decimal("0.000015"), Decimal("0.0000003"))
    return config_from_dict({
        "model_list": [
            _deployment("oai", "oai-gpt5", "openai/gpt-5", openai_url + "/v1", OPENAI_KEY,
                        (IN, OUT, READ)),
            _deployment("anth", "anth-sonnet", "anthropic/claude-sonnet-4-5", anthropic_url,
                        ANTHROPIC_KEY, anth),
            # one group of both kinds: a hosted tool goes to the deployment that runs it
            _deployment("mixed", "mixed-anth", "anthropic/claude-sonnet-4-5", anthropic_url,
                        ANTHROPIC_KEY, anth),
            _deployment("mixed", "mixed-oai", "openai/gpt-5", openai_url + "/v1", OPENAI_KEY,
                        (IN, OUT, READ)),
        ],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "oai", "ledger": {"url": ledger_url},
                  "cache": {"backend": "none"}},
    })


@pytest.fixture
async def gw(sims, migrated_ledger_url: str) -> AsyncIterator[Any]:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    gateway = LLMGateway(config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    yield gateway
    await gateway.aclose()


def _bill(prompt: int, cached: int, out: int) -> int:
    exact = ((prompt - cached) * IN + cached * READ + out * OUT) * 1_000_000
    return int(exact.quantize(Decimal(1)))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_native_answer_is_priced_by_every_token_kind(gw, sims, migrated_ledger_url,
                                                             stream):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(prompt_tokens=5000, cached_tokens=4096, completion_tokens=300,
                                  reasoning_tokens=200))
    body = {"model": "oai", "input": "Plan the release.", "reasoning": {"effort": "low"},
            "max_output_tokens": 1000}
    if stream:
        events = [e async for e in gw.responses_stream("dev-1", "p", body)]
        assert isinstance(events[-1], StreamDone)
        completion = events[-1].completion
        names = [e.event for e in events if isinstance(e, WireEvent)]
        assert names[0] == "response.created" and names[-1] == "response.completed"
    else:
        completion = await gw.responses("dev-1", "p", body)
    u = completion.usage
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens) == (
        5000, 4096, 300, 200)
    assert completion.cost_micros == _bill(5000, 4096, 300)
    (row,) = ledger_rows(migrated_ledger_url)
    assert (row["dialect"], row["deployment_id"], row["reasoning_tokens"], row["cost_micros"]) == (
        "responses", "oai-gpt5", 200, completion.cost_micros)


async def test_native_fields_and_unknown_ones_reach_openai(gw, sims):
    openai_sim, _ = sims
    await gw.responses("dev-1", "p", {
        "model": "oai", "input": "Hi", "reasoning": {"summary": "auto"}, "store": False,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": EXEC,
        "client_metadata": {"thread": "t-1"}})
    sent = openai_sim.requests[-1].json
    assert sent["reasoning"]["summary"] == "auto" and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]
    assert sent["prompt_cache_key"] == "thread-1"
    assert sent["client_metadata"] == {"thread": "t-1"}
    assert [t["name"] for t in sent["tools"]] == ["exec_command"]


async def test_a_hosted_tool_goes_to_the_deployment_that_runs_it(gw, sims):
    openai_sim, anthropic_sim = sims
    for _ in range(4):  # whatever the strategy would pick, never the bridged deployment
        done = await gw.responses("dev-1", "p", {"model": "mixed", "input": "News?",
                                                "tools": CODEX_TOOLS})
        assert done.deployment == "mixed-oai"
    assert anthropic_sim.requests == []
    assert {t["type"] for t in openai_sim.requests[-1].json["tools"]} == {"namespace",
                                                                          "web_search"}


async def test_a_bridged_deployment_gets_the_namespaced_functions_and_the_drop_is_noted(
        gw, sims, migrated_ledger_url):
    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="exec_command",
                                                         arguments={"cmd": "ls"})]))
    turn = await gw.responses("dev-1", "p", {"model": "anth", "input": "List the files.",
                                            "tools": CODEX_TOOLS})
    assert [t["name"] for t in anthropic_sim.requests[-1].json["tools"]] == ["exec_command"]
    assert turn.tool_calls[0]["function"]["name"] == "exec_command"
    (row,) = ledger_rows(migrated_ledger_url)
    assert row["metadata"]["provider_details"] == {"dropped_tool_types": ["web_search"]}


async def test_a_continuation_crosses_providers_and_stays_in_its_project(gw, sims):
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="exec_command",
                                                      arguments={"cmd": "ls"})]))
    first = await gw.responses("dev-1", "p", {"model": "oai", "input": "List the files.",
                                             "tools": EXEC})
    (call,) = [i for i in first.body["output"] if i["type"] == "function_call"]
    # the answer to the tool call goes to another provider: llmgw carries the history
    second = await gw.responses("dev-1", "p", {
        "model": "anth", "previous_response_id": first.body["id"], "tools": EXEC,
        "input": [{"type": "function_call_output", "call_id": call["call_id"],
                   "output": "notes.txt"}]})
    assert "notes.txt" in (second.content or "")
    sent = str(anthropic_sim.requests[-1].json["messages"])
    assert "List the files." in sent and "exec_command" in sent
    assert "previous_response_id" not in anthropic_sim.requests[-1].json
    with pytest.raises(UnknownResponse):
        await gw.responses("dev-1", "other-project", {
            "model": "oai", "previous_response_id": first.body["id"], "input": "And?"})
    assert (await gw.stored_response("p", first.body["id"]))["id"] == first.body["id"]
    with pytest.raises(UnknownResponse):
        await gw.stored_response("other-project", first.body["id"])


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_whose_stored_copy_cannot_be_written_still_reaches_the_caller(
        gw, migrated_ledger_url, stream, caplog):
    from sqlalchemy import create_engine, text

    from llmgw.errors import LedgerError

    engine = create_engine(migrated_ledger_url)
    with engine.begin() as conn:  # the table the stored copies go to is gone
        conn.execute(text("DROP TABLE stored_responses"))
    engine.dispose()
    body = {"model": "oai", "input": "Say hi", "max_output_tokens": 50}
    if stream:
        events = [e async for e in gw.responses_stream("dev-1", "p", body)]
        assert isinstance(events[-1], StreamDone)
        completion = events[-1].completion
    else:
        completion = await gw.responses("dev-1", "p", body)
    assert completion.content and completion.cost_micros > 0  # answered, and billed
    (row,) = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["cost_micros"]) == ("ok", completion.cost_micros)
    assert f"request {completion.request_id}: response" in caplog.text  # said, not hidden
    with pytest.raises(LedgerError):  # a read of it is a typed error, not a driver's
        await gw.stored_response("p", completion.body["id"])
