"""AnthropicSim's extended thinking, cache writes, count_tokens and unknown fields, over real HTTP:
the Anthropic SDK's types and client, and LiteLLM's anthropic provider (completion and Messages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import (
    Message,
    MessageTokensCount,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from anthropic.types.shared import ErrorResponse

from llmgw.sim import AnthropicSim, FaultPlan, ToolCall
from tests.sim import sse_json, strict
from tests.sim.conftest import fresh

KEY = "sk-ant-think-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
# A real model name: LiteLLM drops `thinking` for models its price map says cannot think.
MODEL = "claude-sonnet-4-5"
ASK = [{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}]
THINK = {"type": "enabled", "budget_tokens": 1024}
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
BODY = {"model": MODEL, "max_tokens": 2048, "messages": ASK, "thinking": THINK}
EVENT_TYPES = {
    "message_start": RawMessageStartEvent,
    "content_block_start": RawContentBlockStartEvent,
    "content_block_delta": RawContentBlockDeltaEvent,
    "content_block_stop": RawContentBlockStopEvent,
    "message_delta": RawMessageDeltaEvent,
    "message_stop": RawMessageStopEvent,
}


@pytest.fixture(scope="module")
def server() -> Iterator[AnthropicSim]:
    with AnthropicSim(api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sim(server: AnthropicSim) -> AnthropicSim:
    return fresh(server)  # type: ignore[return-value]


def post(
    sim: AnthropicSim, body: dict, path: str = "/v1/messages", headers: dict | None = None
) -> httpx.Response:
    return httpx.post(
        sim.base_url + path, json=body, headers=HEADERS if headers is None else headers, timeout=5
    )


def events_of(text: str) -> list[tuple[str, Any]]:
    """A stream parsed strictly: every event but ping validated by its SDK type."""
    parsed = []
    for name, data in sse_json(text):
        assert name is not None and data["type"] == name
        parsed.append((name, data if name == "ping" else strict(EVENT_TYPES[name], data)))
    return parsed


def turn_after(message: dict, result: str = "18 degrees") -> list[dict]:
    """The conversation after ``message`` (holding a tool use) and the tool's result."""
    [use] = [b for b in message["content"] if b["type"] == "tool_use"]
    return [
        *ASK,
        {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": result}]},
    ]


# -- thinking blocks --------------------------------------------------------------------


@pytest.mark.parametrize("thinking", [THINK, {"type": "adaptive"}], ids=["enabled", "adaptive"])
def test_thinking_request_gets_a_signed_thinking_block_first(sim: AnthropicSim, thinking: dict) -> None:
    sim.plan = FaultPlan(answer="Cold.", thinking="Oslo is north, so it is cold.")
    message = strict(Message, post(sim, {**BODY, "thinking": thinking}).json())
    assert [b.type for b in message.content] == ["thinking", "text"]
    block = message.content[0]
    assert block.thinking == "Oslo is north, so it is cold."  # type: ignore[union-attr]
    assert block.signature == sim.sign_thinking(block.thinking)  # type: ignore[union-attr]
    assert message.content[1].text == "Cold."  # type: ignore[union-attr]
    assert message.usage.output_tokens == 8  # thinking words count as output, as Anthropic bills them
    [record] = sim.wait_for_responses(1)
    assert (record.thinking, record.redacted_thinking) == ("Oslo is north, so it is cold.", False)


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}], ids=["absent", "disabled"])
def test_no_thinking_block_unless_asked(sim: AnthropicSim, thinking: dict | None) -> None:
    body = {k: v for k, v in BODY.items() if k != "thinking"}
    message = strict(Message, post(sim, body if thinking is None else {**body, "thinking": thinking}).json())
    assert [b.type for b in message.content] == ["text"]
    assert sim.wait_for_responses(1)[0].thinking is None


def test_thinking_stream_sends_deltas_signature_then_the_tool_use_at_index_1(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Oslo"}), thinking="Need the weather tool.")
    events = events_of(post(sim, {**BODY, "tools": TOOLS, "stream": True}).text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    start = events[1][1]
    assert start.index == 0 and start.content_block.model_dump() == {
        "type": "thinking",
        "thinking": "",
        "signature": "",
    }
    zero = [e.delta for _, e in events if isinstance(e, RawContentBlockDeltaEvent) and e.index == 0]
    assert [d.type for d in zero] == ["thinking_delta"] * 4 + ["signature_delta"]
    assert "".join(d.thinking for d in zero[:-1]) == "Need the weather tool."
    assert zero[-1].signature == sim.sign_thinking("Need the weather tool.")
    stop_0 = names.index("content_block_stop")
    assert events[stop_0][1].index == 0 and names[stop_0 - 1] == "content_block_delta"
    second = events[stop_0 + 1][1]
    assert isinstance(second, RawContentBlockStartEvent) and second.index == 1
    assert second.content_block.type == "tool_use" and second.content_block.name == "get_weather"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-3][1].index == 1 and events[-2][1].delta.stop_reason == "tool_use"


async def test_official_sdk_assembles_the_thinking_stream(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(answer="It is cold.", thinking="Think about Oslo.")
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)
    async with client.messages.stream(model=MODEL, max_tokens=2048, messages=ASK, thinking=THINK) as stream:
        final = await stream.get_final_message()
    await client.close()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Think about Oslo."
    assert thinking.signature == sim.sign_thinking("Think about Oslo.")
    assert text.type == "text" and text.text == "It is cold."


def test_redacted_thinking_json_and_stream(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(answer="Cold.", redact_thinking=True)
    message = strict(Message, post(sim, BODY).json())
    assert [b.type for b in message.content] == ["redacted_thinking", "text"]
    data = message.content[0].data  # type: ignore[union-attr]
    assert sim.verify_redacted(data) and not sim.verify_redacted(data[:-4] + "AAA=")
    assert message.usage.output_tokens == 1  # the redacted thinking is not counted here

    events = events_of(post(sim, {**BODY, "stream": True}).text)
    names = [name for name, _ in events]
    assert names[:5] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_stop",
        "content_block_start",
    ]
    block = events[1][1].content_block
    assert block.type == "redacted_thinking" and sim.verify_redacted(block.data)
    assert events[4][1].index == 1 and events[4][1].content_block.type == "text"
    records = sim.wait_for_responses(2)
    assert all(r.redacted_thinking and r.thinking is None for r in records)


# -- the checks on later turns ----------------------------------------------------------


@pytest.mark.parametrize("redact", [False, True], ids=["thinking", "redacted"])
def test_blocks_sent_back_unchanged_are_accepted(sim: AnthropicSim, redact: bool) -> None:
    sim.plan = FaultPlan(
        tool_loop=[ToolCall(name="get_weather", arguments={"city": "Oslo"})], redact_thinking=redact
    )
    first = post(sim, {**BODY, "tools": TOOLS}).json()
    assert [b["type"] for b in first["content"]] == [
        "redacted_thinking" if redact else "thinking",
        "tool_use",
    ]
    second = post(sim, {**BODY, "tools": TOOLS, "messages": turn_after(first)})
    assert second.status_code == 200, second.text
    assert second.json()["content"][-1] == {"type": "text", "text": "The tool returned: 18 degrees"}


def refusal(resp: httpx.Response) -> str:
    assert resp.status_code == 400, resp.text
    error = strict(ErrorResponse, resp.json())
    assert error.error.type == "invalid_request_error"
    return error.error.message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda b: {**b, "thinking": b["thinking"] + " (edited)"},
            "messages.1.content.0: Invalid `signature` in `thinking` block",
        ),
        (
            lambda b: {**b, "signature": "c2lnbmVkIGVsc2V3aGVyZQ=="},
            "messages.1.content.0: Invalid `signature` in `thinking` block",
        ),
        (
            lambda b: {k: v for k, v in b.items() if k != "signature"},
            "messages.1.content.0.thinking.signature: Field required",
        ),
        (
            lambda b: {"type": "redacted_thinking", "data": "bm90IG91cnM="},
            "messages.1.content.0: Invalid `data` in `redacted_thinking` block",
        ),
    ],
    ids=["edited-text", "foreign-signature", "no-signature", "foreign-redacted"],
)
def test_tampered_blocks_are_refused_with_anthropics_words(
    sim: AnthropicSim, edit: Any, message: str
) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Oslo"}))
    first = post(sim, {**BODY, "tools": TOOLS}).json()
    conversation = turn_after(first)
    conversation[1]["content"] = [edit(first["content"][0]), *first["content"][1:]]
    # Even with thinking off now: every thinking block in an assistant turn is checked.
    body = {k: v for k, v in BODY.items() if k != "thinking"}
    assert refusal(post(sim, {**body, "tools": TOOLS, "messages": conversation})) == message
    refused = sim.wait_for_responses(2)[1]
    assert (refused.status, refused.fault, refused.model, refused.usage) == (
        400,
        "invalid_thinking",
        MODEL,
        None,
    )


def test_a_block_from_another_server_is_refused(sim: AnthropicSim) -> None:
    with AnthropicSim(FaultPlan(tool_call=ToolCall(arguments={"city": "Oslo"}))) as other:
        first = post(other, {**BODY, "tools": TOOLS}).json()  # type: ignore[arg-type]
    assert refusal(post(sim, {**BODY, "tools": TOOLS, "messages": turn_after(first)})) == (
        "messages.1.content.0: Invalid `signature` in `thinking` block"
    )


def test_final_tool_use_turn_without_thinking_is_refused_when_thinking_is_on(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Oslo"}))
    plain = {k: v for k, v in BODY.items() if k != "thinking"}
    first = post(sim, {**plain, "tools": TOOLS}).json()
    assert [b["type"] for b in first["content"]] == ["tool_use"]
    conversation = turn_after(first)
    message = refusal(post(sim, {**BODY, "tools": TOOLS, "messages": conversation}))
    assert message.startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. "
        "When `thinking` is enabled, a final `assistant` message must start with a thinking block"
    )
    assert post(sim, {**plain, "tools": TOOLS, "messages": conversation}).status_code == 200  # thinking off
    assert [r.status for r in sim.wait_for_responses(3)] == [200, 400, 200]


# -- LiteLLM: completion and the native Messages route ----------------------------------


async def test_litellm_completion_carries_thinking_blocks_through_a_tool_round(
    sim: AnthropicSim, litellm
) -> None:
    sim.plan = FaultPlan(
        tool_loop=[ToolCall(name="get_weather", arguments={"city": "Oslo"})], thinking="Use the tool."
    )
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"]}}
    ]
    kwargs = {
        "model": f"anthropic/{MODEL}",
        "api_base": sim.base_url,
        "api_key": KEY,
        "thinking": THINK,
        "max_tokens": 2048,
        "tools": tools,
        "num_retries": 0,
        "_skip_mcp_handler": True,
    }
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    first = (await litellm.acompletion(messages=ask, **kwargs)).choices[0].message
    assert first.reasoning_content == "Use the tool."
    assert first.thinking_blocks[0]["signature"] == sim.sign_thinking("Use the tool.")
    [call] = first.tool_calls
    follow = [*ask, first.model_dump(), {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}]
    final = await litellm.acompletion(messages=follow, **kwargs)
    assert final.choices[0].message.content == "The tool returned: 18 degrees"
    sent = sim.requests[1].json["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["thinking", "tool_use"]

    first.thinking_blocks[0]["thinking"] = "Something else."  # LiteLLM sends what it is given
    follow[1] = first.model_dump()
    with pytest.raises(litellm.BadRequestError, match="Invalid `signature` in `thinking` block"):
        await litellm.acompletion(messages=follow, **kwargs)


def router(litellm, sim: AnthropicSim):
    params = {"model": f"anthropic/{MODEL}", "api_base": sim.base_url, "api_key": KEY}
    return litellm.Router(model_list=[{"model_name": "claude", "litellm_params": params}], num_retries=0)


async def test_litellm_messages_route_passes_thinking_and_cache_writes_through(
    sim: AnthropicSim, litellm
) -> None:
    sim.plan = FaultPlan(
        tool_loop=[ToolCall(name="get_weather", arguments={"city": "Oslo"})],
        prompt_tokens=100,
        cached_tokens=50,
        cache_write_5m_tokens=20,
        cache_write_1h_tokens=10,
    )
    r = router(litellm, sim)
    first = await r.aanthropic_messages(
        model="claude", max_tokens=2048, messages=ASK, thinking=THINK, tools=TOOLS
    )
    assert [b["type"] for b in first["content"]] == ["thinking", "tool_use"]
    assert first["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 20,
        "ephemeral_1h_input_tokens": 10,
    }
    assert (
        first["usage"]["input_tokens"],
        first["usage"]["cache_creation_input_tokens"],
        first["usage"]["cache_read_input_tokens"],
    ) == (20, 30, 50)
    final = await r.aanthropic_messages(
        model="claude", max_tokens=2048, messages=turn_after(dict(first)), thinking=THINK, tools=TOOLS
    )
    assert final["content"][-1]["text"] == "The tool returned: 18 degrees"
    assert sim.requests[1].json["messages"][1]["content"][0] == first["content"][0]


# -- cache writes -----------------------------------------------------------------------


def test_cache_writes_in_json_usage_and_records(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(
        prompt_tokens=1000,
        completion_tokens=5,
        cached_tokens=600,
        cache_write_5m_tokens=250,
        cache_write_1h_tokens=100,
    )
    usage = strict(Message, post(sim, BODY).json()).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        50,
        600,
        350,
    )
    assert usage.cache_creation is not None
    assert (
        usage.cache_creation.ephemeral_5m_input_tokens,
        usage.cache_creation.ephemeral_1h_input_tokens,
    ) == (250, 100)
    [record] = sim.wait_for_responses(1)
    assert (
        record.prompt_tokens,
        record.cached_tokens,
        record.cache_write_5m_tokens,
        record.cache_write_1h_tokens,
        record.cache_write_tokens,
    ) == (1000, 600, 250, 100, 350)


def test_cache_writes_never_exceed_the_prompt(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(prompt_tokens=10, cached_tokens=6, cache_write_5m_tokens=3, cache_write_1h_tokens=50)
    usage = post(sim, BODY).json()["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["cache_creation"]) == (
        0,
        6,
        {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 1},
    )


def test_cache_writes_in_stream_start_and_delta(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(
        prompt_tokens=400,
        completion_tokens=5,
        cached_tokens=100,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=200,
    )
    events = events_of(post(sim, {**BODY, "stream": True}).text)
    start, delta = events[0][1], events[-2][1]
    assert isinstance(start, RawMessageStartEvent) and isinstance(delta, RawMessageDeltaEvent)
    u = start.message.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (
        100,
        100,
        200,
        1,
    )
    assert u.cache_creation is not None and u.cache_creation.ephemeral_1h_input_tokens == 200
    d = delta.usage
    assert (d.input_tokens, d.cache_read_input_tokens, d.cache_creation_input_tokens, d.output_tokens) == (
        100,
        100,
        200,
        5,
    )


async def test_litellm_reports_cache_writes_by_ttl(sim: AnthropicSim, litellm) -> None:
    sim.plan = FaultPlan(
        prompt_tokens=300,
        completion_tokens=4,
        cached_tokens=100,
        cache_write_5m_tokens=60,
        cache_write_1h_tokens=40,
    )
    for stream in (False, True):
        resp = await litellm.acompletion(
            model=f"anthropic/{MODEL}",
            api_base=sim.base_url,
            api_key=KEY,
            num_retries=0,
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if stream:
            resp = litellm.stream_chunk_builder([chunk async for chunk in resp])
        details = resp.usage.prompt_tokens_details
        assert (resp.usage.prompt_tokens, details.cached_tokens, details.cache_creation_tokens) == (
            300,
            100,
            100,
        )
        ttl = details.cache_creation_token_details
        assert (ttl.ephemeral_5m_input_tokens, ttl.ephemeral_1h_input_tokens) == (60, 40)


# -- count_tokens, unknown fields, model names ------------------------------------------


def test_count_tokens_matches_the_prompt_of_the_same_request(sim: AnthropicSim) -> None:
    body = {"model": MODEL, "system": "Be brief.", "messages": ASK, "tools": TOOLS, "thinking": THINK}
    counted = post(sim, body, "/v1/messages/count_tokens")
    assert counted.status_code == 200
    tokens = strict(MessageTokensCount, counted.json()).input_tokens
    answered = post(sim, {**body, "max_tokens": 100}).json()
    assert tokens == answered["usage"]["input_tokens"]
    without_tools = post(sim, {k: v for k, v in body.items() if k != "tools"}, "/v1/messages/count_tokens")
    assert 5 == without_tools.json()["input_tokens"] < tokens  # "Be brief." + "Weather in Oslo?"
    records = sim.wait_for_responses(3)
    assert (records[0].path, records[0].status, records[0].prompt_tokens, records[0].model) == (
        "/v1/messages/count_tokens",
        200,
        tokens,
        MODEL,
    )
    assert sim.requests[0].json == body


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"anthropic-version": "2023-06-01"}, {"model": MODEL, "messages": ASK}, 401),
        ({"x-api-key": KEY}, {"model": MODEL, "messages": ASK}, 400),
        (HEADERS, {"messages": ASK}, 400),
        (HEADERS, {"model": MODEL}, 400),
    ],
    ids=["no-key", "no-version", "no-model", "no-messages"],
)
def test_count_tokens_refusals(sim: AnthropicSim, headers: dict, body: dict, status: int) -> None:
    resp = post(sim, body, "/v1/messages/count_tokens", headers)
    assert resp.status_code == status
    strict(ErrorResponse, resp.json())
    assert sim.wait_for_responses(1)[0].status == status


async def test_official_sdk_counts_tokens(sim: AnthropicSim) -> None:
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)
    counted = await client.messages.count_tokens(model=MODEL, system="Be brief.", messages=ASK)
    await client.close()
    assert counted.input_tokens == 5


def test_unknown_top_level_fields_are_recorded_as_sent(sim: AnthropicSim) -> None:
    extra = {
        "context_management": {
            "edits": [{"type": "clear_tool_uses_20250919", "keep": {"type": "tool_uses", "value": 3}}]
        },
        "output_config": {"effort": "medium"},
        "metadata": {"user_id": "user_abc"},
    }
    body = {**BODY, **extra}
    assert post(sim, body).status_code == 200
    assert post(sim, {**body, "stream": True}).status_code == 200
    first, second = sim.wait_for_requests(2)
    assert first.json == body and second.json == {**body, "stream": True}


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-opus-4-1-20250805", "claude-3-5-haiku-latest"]
)
def test_any_model_name_is_served(sim: AnthropicSim, model: str) -> None:
    resp = post(sim, {**BODY, "model": model})
    assert resp.status_code == 200 and resp.json()["model"] == model


async def test_litellm_count_tokens_handler_reaches_the_sim(sim: AnthropicSim) -> None:
    from llmgw._litellm.count_tokens import anthropic_count

    body = {"model": MODEL, "system": "Be brief.", "messages": ASK, "tools": TOOLS, "thinking": THINK}
    expected = post(sim, body, "/v1/messages/count_tokens").json()["input_tokens"]
    counted = await anthropic_count(body, model=MODEL, api_key=KEY, api_base=sim.base_url, timeout_s=5)
    assert counted == expected
    sent = sim.wait_for_requests(2)[1]
    assert sent.path == "/v1/messages/count_tokens" and sent.headers["x-api-key"] == KEY
    alone = await anthropic_count(
        {"model": MODEL, "system": "Be brief.", "messages": []},
        model=MODEL,
        api_key=KEY,
        api_base=sim.base_url,
        timeout_s=5,
    )
    assert alone == 2
