"""The Anthropic Messages dialect on the one pipeline (docs/http/messages.md): `Router.aanthropic_messages`
natively to Anthropic deployments (what the provider sent comes back, whole), LiteLLM's
translation to the others, and the gateway's budgets, rows and cost for both."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded, ProviderRejected
from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from llmgw.types import StreamDone, WireEvent
from tests.budgets.conftest import sums
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows

# Anthropic's list prices for a Sonnet-class model, per token: input, output, cache read,
# cache write at 5 minutes, at 1 hour.
IN, OUT, READ, WRITE, WRITE_1H = (Decimal("0.000003"), Decimal("0.000015"), Decimal("0.0000003"),
                                  Decimal("0.00000375"), Decimal("0.000006"))
BASH = [{"name": "Bash", "description": "Run a shell command",
         "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                          "required": ["command"]}}]
HI = [{"role": "user", "content": "Say hi"}]


def config(openai_url: str, anthropic_url: str, ledger_url: str, budgets: dict[str, Any] | None = None):
    return config_from_dict({
        "model_list": [
            {"model_name": "anth", "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5", "api_base": anthropic_url,
                "api_key": ANTHROPIC_KEY},
             "model_info": {"id": "anth-sonnet", "input_cost_per_token": float(IN),
                            "output_cost_per_token": float(OUT),
                            "cache_read_input_token_cost": float(READ),
                            "cache_creation_input_token_cost": float(WRITE),
                            "cache_creation_input_token_cost_above_1hr": float(WRITE_1H)}},
            {"model_name": "oai", "litellm_params": {
                "model": "openai/gpt-4.1", "api_base": openai_url + "/v1", "api_key": OPENAI_KEY},
             "model_info": {"id": "oai-gpt41", "input_cost_per_token": 0.000002,
                            "output_cost_per_token": 0.000008}},
        ],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "anth", "ledger": {"url": ledger_url},
                  "cache": {"backend": "none"},
                  **({"budgets": budgets} if budgets else {})},
    })


@pytest.fixture
async def gw(sims, migrated_ledger_url: str) -> AsyncIterator[Any]:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    gateway = LLMGateway(config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    yield gateway
    await gateway.aclose()


async def test_a_native_answer_is_what_anthropic_sent(gw, sims, migrated_ledger_url):
    _, anthropic_sim = sims
    completion = await gw.anthropic_messages("dev-1", "p", {
        "model": "anth", "max_tokens": 100, "messages": HI})
    body = completion.body
    assert body["type"] == "message" and body["content"] == [
        {"type": "text", "text": anthropic_sim.responses[-1].answer}]
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                  "cache_creation_input_tokens"}
    (row,) = ledger_rows(migrated_ledger_url)
    assert (row["request_id"], row["status"], row["deployment_id"], row["dialect"]) == (
        completion.request_id, "ok", "anth-sonnet", "anthropic")
    assert row["cost_micros"] == completion.cost_micros > 0


async def test_unknown_fields_and_betas_reach_anthropic_unchanged(gw, sims):
    _, anthropic_sim = sims
    extra = {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
             "service_tier": "auto", "a_field_from_next_year": {"nested": [1, 2, 3]},
             "metadata": {"user_id": '{"device_id":"d","account_uuid":"","session_id":"s"}'}}
    await gw.anthropic_messages("dev-1", "p", {"model": "anth", "max_tokens": 100,
                                              "messages": HI, **extra},
                                headers={"anthropic-beta": "context-management-2025-06-27"})
    sent = anthropic_sim.requests[-1]
    for name, value in extra.items():
        assert sent.json[name] == value, name
    assert "context-management-2025-06-27" in sent.headers["anthropic-beta"]


async def test_system_role_messages_and_system_blocks_are_taken(gw, sims):
    _, anthropic_sim = sims
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "system", "content": "Answer in English."}, *HI]
    completion = await gw.anthropic_messages("dev-1", "p", {
        "model": "anth", "max_tokens": 100, "system": system, "messages": messages})
    assert completion.content
    assert anthropic_sim.requests[-1].json["system"] == system


async def test_signed_thinking_survives_a_tool_loop_and_a_changed_one_is_refused(gw, sims):
    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="Bash",
                                                         arguments={"command": "ls"})]))
    first = {"model": "anth", "max_tokens": 4096, "tools": BASH,
             "thinking": {"type": "enabled", "budget_tokens": 1024},
             "messages": [{"role": "user", "content": "List the files."}]}
    turn = await gw.anthropic_messages("dev-1", "p", first)
    kinds = [b["type"] for b in turn.body["content"]]
    assert kinds == ["thinking", "tool_use"], kinds
    assert turn.body["content"][0]["signature"]
    tool_use = turn.body["content"][1]
    second = {**first, "messages": [*first["messages"],
                                    {"role": "assistant", "content": turn.body["content"]},
                                    {"role": "user", "content": [{
                                        "type": "tool_result", "tool_use_id": tool_use["id"],
                                        "content": "notes.txt"}]}]}
    answer = await gw.anthropic_messages("dev-1", "p", second)
    assert "notes.txt" in (answer.content or "")
    assert answer.body["content"][0]["type"] == "thinking"

    # An edited block never reaches Anthropic as if it were signed: LiteLLM 1.106.2 leaves
    # out a thinking block whose text no longer matches what it passed on (and the thinking
    # that would then need it); the simulator, like Anthropic, would refuse it.
    altered = copy.deepcopy(second)
    altered["messages"][1]["content"][0]["thinking"] += " (edited)"
    try:
        await gw.anthropic_messages("dev-1", "p", altered)
    except ProviderRejected as refused:
        assert "signature" in str(refused)
    sent = anthropic_sim.requests[-1].json["messages"][1]["content"]
    assert not [b for b in sent if b.get("type") == "thinking" and "(edited)" in b["thinking"]]


async def test_a_tool_loop_translated_to_openai_drops_thinking(gw, sims):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="Bash", arguments={"command": "ls"})]))
    first = {"model": "oai", "max_tokens": 4096, "tools": BASH,
             "thinking": {"type": "enabled", "budget_tokens": 1024},
             "output_config": {"effort": "high"},
             "messages": [{"role": "user", "content": "List the files."}]}
    turn = await gw.anthropic_messages("dev-1", "p", first)
    sent = openai_sim.requests[-1].json
    assert not {"thinking", "reasoning_effort", "output_config"} & set(sent)
    (tool_use,) = [b for b in turn.body["content"] if b["type"] == "tool_use"]
    assert tool_use["name"] == "Bash" and tool_use["input"] == {"command": "ls"}
    answer = await gw.anthropic_messages("dev-1", "p", {
        **first, "messages": [*first["messages"],
                              {"role": "assistant", "content": turn.body["content"]},
                              {"role": "user", "content": [{
                                  "type": "tool_result", "tool_use_id": tool_use["id"],
                                  "content": "notes.txt"}]}]})
    assert "notes.txt" in (answer.content or "")
    assert answer.deployment == "oai-gpt41" and answer.dialect == "anthropic"


def _bill(prompt: int, read: int, write_5m: int, write_1h: int, out: int) -> int:
    exact = ((prompt - read - write_5m - write_1h) * IN + read * READ + write_5m * WRITE
             + write_1h * WRITE_1H + out * OUT) * 1_000_000
    return int(exact.quantize(Decimal(1)))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("write_5m,write_1h", [(2000, 0), (0, 2000)])
async def test_cache_reads_and_writes_are_billed_as_anthropic_bills_them(
        gw, sims, migrated_ledger_url, stream, write_5m, write_1h):
    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(prompt_tokens=10_100, cached_tokens=8000,
                                     cache_write_5m_tokens=write_5m,
                                     cache_write_1h_tokens=write_1h, completion_tokens=50))
    body = {"model": "anth", "max_tokens": 200, "messages": HI}
    if stream:
        events = [e async for e in gw.anthropic_messages_stream("dev-1", "p", body)]
        assert isinstance(events[-1], StreamDone)
        completion = events[-1].completion
        assert {e.event for e in events[:-1] if isinstance(e, WireEvent)} >= {
            "message_start", "content_block_delta", "message_delta", "message_stop"}
    else:
        completion = await gw.anthropic_messages("dev-1", "p", body)
    expected = _bill(10_100, 8000, write_5m, write_1h, 50)
    assert completion.cost_micros == expected
    u = completion.usage
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens, u.cache_write_1h_tokens,
            u.completion_tokens) == (10_100, 8000, write_5m + write_1h, write_1h, 50)
    (row,) = ledger_rows(migrated_ledger_url)
    assert row["cost_micros"] == expected and row["stream"] is stream
    assert (row["cache_read_tokens"], row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (
        8000, write_5m + write_1h, write_1h)


async def test_a_native_stream_passes_every_event_through(gw, sims):
    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="Bash", arguments={"command": "ls"})]))
    body = {"model": "anth", "max_tokens": 4096, "tools": BASH,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "List the files."}]}
    events = [e async for e in gw.anthropic_messages_stream("dev-1", "p", body)]
    wire = [e for e in events if isinstance(e, WireEvent)]
    deltas = {e.data["delta"]["type"] for e in wire if e.event == "content_block_delta"}
    assert deltas >= {"thinking_delta", "signature_delta", "input_json_delta"}
    assert all(e.raw.startswith("event: ") and e.raw.endswith("\n\n") for e in wire)
    done = events[-1]
    assert isinstance(done, StreamDone)
    kinds = [b["type"] for b in done.completion.body["content"]]
    assert kinds == ["thinking", "tool_use"]
    assert done.completion.tool_calls[0]["function"]["name"] == "Bash"


async def test_a_spent_budget_refuses_a_messages_request_before_any_provider_call(
        sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    gw = LLMGateway(config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                           budgets={"projects": {"*": {"daily_usd": 0.0001}}}))
    try:
        with pytest.raises(BudgetExceeded) as refused:
            await gw.anthropic_messages("dev-1", "p", {"model": "anth", "max_tokens": 4000,
                                                      "messages": HI})
        assert refused.value.scope == "project"
        assert anthropic_sim.requests == []
        (row,) = ledger_rows(migrated_ledger_url)
        assert (row["status"], row["dialect"]) == ("refused", "anthropic")
        assert sums(migrated_ledger_url)["open"] == 0
    finally:
        await gw.aclose()


async def test_a_messages_stream_cut_by_its_caller_settles_what_was_generated(
        sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    gw = LLMGateway(config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                           budgets={"projects": {"*": {"daily_usd": 5}}}))
    try:
        stream = gw.anthropic_messages_stream("dev-1", "p", {
            "model": "anth", "max_tokens": 300,
            "messages": [{"role": "user", "content": "Tell a long story " * 20}]})
        async for event in stream:
            if isinstance(event, WireEvent) and event.event == "content_block_delta":
                break
        await stream.aclose()
        await gw.drain()
        (row,) = ledger_rows(migrated_ledger_url)
        assert row["status"] == "partial" and row["completion_tokens"] > 0
        s = sums(migrated_ledger_url)
        assert s["open"] == 0
        spent, reserved = s["counters"][("project", "p", "day")]
        assert reserved == 0 and spent == row["cost_micros"] > 0
    finally:
        await gw.aclose()
