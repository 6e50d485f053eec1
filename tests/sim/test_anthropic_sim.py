"""AnthropicSim against the Anthropic SDK's types, the official client and LiteLLM's anthropic provider."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from anthropic.types import (
    Message,
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

KEY = "sk-ant-sim-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
SYSTEM = "Be brief."
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
BODY = {"model": "claude-sim", "max_tokens": 256, "system": SYSTEM, "messages": MESSAGES}
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ANSWER = "Simulated answer to: What is the capital of France?"
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



def post(sim: AnthropicSim, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        sim.base_url + "/v1/messages", json=body, headers=HEADERS if headers is None else headers, timeout=5
    )


def stream_events(text: str) -> list[tuple[str, object]]:
    """Parse a stream strictly: every event but ping validated by its SDK type."""
    parsed = []
    for name, data in sse_json(text):
        assert name is not None and data["type"] == name
        parsed.append((name, data if name == "ping" else strict(EVENT_TYPES[name], data)))
    return parsed


# -- wire format -----------------------------------------------------------------------


def test_json_response_is_a_strict_message(sim: AnthropicSim) -> None:
    resp = post(sim, BODY)
    assert resp.status_code == 200 and resp.headers["request-id"].startswith("req_")
    message = strict(Message, resp.json())
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sim"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == ANSWER  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert {"stop_reason", "stop_sequence"} <= message.model_fields_set
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (8, 9)  # words of system + messages, of the answer
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    [record] = sim.wait_for_responses(1)
    assert record.usage == resp.json()["usage"]
    assert (record.prompt_tokens, record.completion_tokens, record.answer) == (8, 9, ANSWER)


def test_cached_tokens_are_cache_reads_outside_input_tokens(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(answer="Paris.", prompt_tokens=120, completion_tokens=7, cached_tokens=100)
    message = strict(Message, post(sim, BODY).json())
    assert message.content[0].text == "Paris."  # type: ignore[union-attr]
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (20, 100, 7)


def test_stream_has_the_real_event_sequence(sim: AnthropicSim) -> None:
    resp = post(sim, {**BODY, "stream": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = stream_events(resp.text)
    names = [name for name, _ in events]
    words = len(ANSWER.split())
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]
    assert isinstance(start, RawMessageStartEvent)
    assert (
        start.message.content == []
        and start.message.stop_reason is None
        and start.message.usage.input_tokens == 8
    )
    deltas = [e.delta for _, e in events if isinstance(e, RawContentBlockDeltaEvent)]
    assert "".join(d.text for d in deltas if d.type == "text_delta") == ANSWER
    delta = events[-2][1]
    assert isinstance(delta, RawMessageDeltaEvent)
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 9
    assert sim.wait_for_responses(1)[0].chunks == len(events) and sim.wait_for_responses(1)[0].stream


def test_tool_use_json_and_stream(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Paris"}))
    message = strict(Message, post(sim, {**BODY, "tools": TOOLS}).json())
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})

    events = stream_events(post(sim, {**BODY, "tools": TOOLS, "stream": True}).text)
    start = events[1][1]
    assert isinstance(start, RawContentBlockStartEvent) and start.content_block.type == "tool_use"
    deltas = [e.delta for _, e in events if isinstance(e, RawContentBlockDeltaEvent)]
    assert json.loads("".join(d.partial_json for d in deltas if d.type == "input_json_delta")) == {
        "city": "Paris"
    }
    assert events[-2][1].delta.stop_reason == "tool_use"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"anthropic-version": "2023-06-01"}, 401),
        ({"x-api-key": "sk-ant-wrong-secret", "anthropic-version": "2023-06-01"}, 401),
        ({"x-api-key": KEY}, 400),
    ],
    ids=["no-key", "wrong-key", "no-version"],
)
def test_auth_and_version_headers(sim: AnthropicSim, headers: dict, status: int) -> None:
    resp = post(sim, BODY, headers=headers)
    assert resp.status_code == status
    error = strict(ErrorResponse, resp.json())
    assert error.error.type == ("authentication_error" if status == 401 else "invalid_request_error")
    assert "sk-ant-wrong" not in resp.text and KEY not in resp.text


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
        (400, "invalid_request_error"),
    ],
)
def test_error_bodies_match_anthropic(sim: AnthropicSim, status: int, kind: str) -> None:
    sim.plan = FaultPlan.error(status, retry_after=4 if status == 429 else None, message="custom words")
    resp = post(sim, BODY)
    assert resp.status_code == status
    error = strict(ErrorResponse, resp.json())
    assert error.type == "error" and error.error.type == kind and error.error.message == "custom words"
    assert resp.headers.get("retry-after") == ("4" if status == 429 else None)


def test_models_list(sim: AnthropicSim) -> None:
    listing = httpx.get(sim.base_url + "/v1/models", headers=HEADERS).json()
    assert [m["id"] for m in listing["data"]] == ["claude-sim", "claude-sim-haiku"] and listing[
        "has_more"
    ] is False
    assert httpx.get(sim.base_url + "/v1/models").status_code == 401


def test_missing_max_tokens_is_400(sim: AnthropicSim) -> None:
    resp = post(sim, {k: v for k, v in BODY.items() if k != "max_tokens"})
    assert resp.status_code == 400 and "max_tokens" in resp.json()["error"]["message"]


# -- the official SDK -------------------------------------------------------------------


async def test_official_sdk_parses_json_stream_and_errors(sim: AnthropicSim) -> None:
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)
    message = await client.messages.create(
        model="claude-sim", max_tokens=64, system=SYSTEM, messages=MESSAGES
    )
    assert message.content[0].text == ANSWER  # type: ignore[union-attr]

    async with client.messages.stream(
        model="claude-sim", max_tokens=64, system=SYSTEM, messages=MESSAGES
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == ANSWER and final.usage.output_tokens == 9 and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 8

    sim.plan = FaultPlan.rate_limited(retry_after=3, times=1)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model="claude-sim", max_tokens=64, messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "3"
    await client.close()


async def test_official_sdk_rejects_a_malformed_stream(sim: AnthropicSim) -> None:
    sim.plan = FaultPlan.malformed()
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(ValueError):  # json.JSONDecodeError
        async with client.messages.stream(model="claude-sim", max_tokens=64, messages=MESSAGES) as stream:
            _ = [piece async for piece in stream.text_stream]
    await client.close()


# -- LiteLLM's anthropic provider -------------------------------------------------------


def kwargs(sim: AnthropicSim, **extra: object) -> dict:
    return {
        "model": "anthropic/claude-sim",
        "api_base": sim.base_url,
        "api_key": KEY,
        "messages": [{"role": "system", "content": SYSTEM}, *MESSAGES],
        "num_retries": 0,
        "max_retries": 0,
        **extra,
    }


async def test_litellm_swallows_a_malformed_anthropic_stream(sim: AnthropicSim, litellm) -> None:
    # LiteLLM 1.106.2 quirk, pinned so an upgrade that fixes it is noticed: an SSE line
    # that is not JSON switches its parser to "accumulate partial JSON", and a stream
    # that ends there yields no content and finish_reason "stop" instead of an error.
    sim.plan = FaultPlan.malformed()
    stream = await litellm.acompletion(**kwargs(sim, stream=True))
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
