"""Every provider simulator's completions through LiteLLM's real provider code, from the table in
tests.sim.providers_table: the usage LiteLLM reads against the simulator's record, the request
it sends, a stream reassembled, and tool calls (JSON, stream, the result sent back).

A provider's differences are the table's columns; what only one provider's wire does stays in
its own test file."""

from __future__ import annotations

import json

import pytest

from llmgw.sim import FaultPlan, ToolCall
from tests.sim.conftest import fresh
from tests.sim.providers_table import ANSWER, BY_NAME, CHAT, NAMES, TOOL_RESULT, TOOLS

STREAMED = "Paris,  the capital\nof France."  # odd spacing and a newline must survive
OSLO = ToolCall(name="get_weather", arguments={"city": "Oslo"})
# LiteLLM 1.106.2 imports its MCP handler (needs the `mcp` package) for any request with
# tools; the private flag skips that path so the wire format is what is tested.
WITH_TOOLS = {"tools": TOOLS, "_skip_mcp_handler": True}

pytestmark = pytest.mark.parametrize("provider", NAMES)


def cached_tokens(usage) -> int | None:
    details = getattr(usage, "prompt_tokens_details", None)
    return details.cached_tokens if details else None


async def test_litellm_completion_matches_recorded_usage(servers, litellm, provider: str) -> None:
    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = FaultPlan(prompt_tokens=40, completion_tokens=9, cached_tokens=32)
    resp = await litellm.acompletion(**p.call(sim, max_tokens=50))
    assert resp.choices[0].message.content == ANSWER and resp.choices[0].finish_reason == "stop"
    assert resp.model == p.model
    [record] = sim.wait_for_responses(1)
    assert record.usage is not None
    counts = resp.usage.prompt_tokens, resp.usage.completion_tokens
    assert counts == p.wire_counts(record.usage) == (record.prompt_tokens, record.completion_tokens)
    assert counts == (40, 9)
    if p.reports_cached:
        assert cached_tokens(resp.usage) == record.cached_tokens == 32
    else:  # LiteLLM does not make cache reads up
        assert not cached_tokens(resp.usage)

    [request] = [r for r in sim.requests if r.path == p.path]
    assert {name: request.headers.get(name) for name in p.headers} == p.headers
    assert request.json == p.sent


async def test_litellm_stream_reassembles_answer_and_usage(servers, litellm, provider: str) -> None:
    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = FaultPlan(answer=STREAMED, cached_tokens=3)
    stream = await litellm.acompletion(
        **p.call(sim, stream=True, stream_options={"include_usage": True}, **p.stream_call))
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == STREAMED
    [record] = sim.wait_for_responses(1)
    usage = chunks[-1].usage  # on the last chunk, counted once
    assert (usage.prompt_tokens, usage.completion_tokens) == (record.prompt_tokens,
                                                              record.completion_tokens)
    if p.reports_cached:
        assert cached_tokens(usage) == record.cached_tokens == 3
    else:
        assert not cached_tokens(usage)
    assert record.stream is p.streams_on_the_wire
    assert record.chunks == p.stream_chunks(len(STREAMED.split()))

    [body] = [r.json for r in sim.requests if r.path == p.stream_path]
    assert {name: body.get(name) for name in p.stream_sent} == p.stream_sent
    if not p.streams_on_the_wire:
        assert "stream" not in body


async def test_litellm_tool_call_json_and_stream(servers, litellm, provider: str) -> None:
    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = FaultPlan(tool_call=OSLO)
    resp = await litellm.acompletion(**p.call(sim, **WITH_TOOLS))
    assert resp.choices[0].finish_reason == p.tool_finish_reason
    [call] = resp.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    [record] = sim.wait_for_responses(1)
    assert record.tool_call is not None
    assert call.id and (call.id == record.tool_call["id"]) is p.keeps_tool_call_id

    stream = await litellm.acompletion(**p.call(sim, stream=True, **WITH_TOOLS, **p.stream_call))
    built = litellm.stream_chunk_builder([chunk async for chunk in stream])
    assert built.choices[0].finish_reason == p.tool_finish_reason
    [streamed] = built.choices[0].message.tool_calls
    assert streamed.function.name == "get_weather"
    assert json.loads(streamed.function.arguments) == {"city": "Oslo"}
    assert [body["tools"] for body in p.bodies(sim)] == [p.sent_tools] * 2
    sim.wait_for_responses(2)  # streams are recorded after the last byte: let it land in this test


async def test_litellm_tool_result_round_trip(servers, litellm, provider: str) -> None:
    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = FaultPlan(tool_call=OSLO)
    resp = await litellm.acompletion(**p.call(sim, **WITH_TOOLS))
    [call] = resp.choices[0].message.tool_calls

    sim.plan = FaultPlan(answer="Sunny.")
    messages = [
        *CHAT,
        resp.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    final = await litellm.acompletion(**{**p.call(sim, **WITH_TOOLS), "messages": messages})
    assert final.choices[0].message.content == "Sunny."
    first, second = p.bodies(sim)
    asked = first[p.turns_key]
    assert second[p.turns_key][:len(asked)] == asked  # the conversation so far, as sent before
    assert second[p.turns_key][len(asked):] == p.sent_tool_turns(call.id)
    sim.wait_for_responses(2)
