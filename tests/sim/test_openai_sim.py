"""OpenAISim against the OpenAI SDK's types, the official client and LiteLLM's openai provider."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llmgw.sim import FaultPlan, OpenAISim, ToolCall
from tests.sim import sse_json, strict
from tests.sim.conftest import fresh

KEY = "sk-sim-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
ANSWER = "Simulated answer to: What is the capital of France?"


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAISim]:
    with OpenAISim(api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sim(server: OpenAISim) -> OpenAISim:
    return fresh(server)  # type: ignore[return-value]



def post(
    sim: OpenAISim, body: dict, headers: dict | None = None, path: str = "/v1/chat/completions"
) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=body, headers=AUTH if headers is None else headers, timeout=5)


# -- wire format -----------------------------------------------------------------------


def test_json_response_is_a_strict_chat_completion(sim: OpenAISim) -> None:
    resp = post(sim, {"model": "sim-gpt", "messages": MESSAGES})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    completion = strict(ChatCompletion, resp.json())
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "sim-gpt"
    assert {"usage", "system_fingerprint"} <= completion.model_fields_set
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.index == 0
    assert choice.message.role == "assistant" and choice.message.content == ANSWER
    assert "refusal" in choice.message.model_fields_set and choice.message.refusal is None
    usage = completion.usage
    assert usage is not None
    # Default usage: words of all prompt messages and of the answer.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 9, 17)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0
    [record] = sim.wait_for_responses(1)
    assert record.usage == resp.json()["usage"]
    assert (record.status, record.answer, record.model, record.stream) == (200, ANSWER, "sim-gpt", False)


def test_plan_sets_answer_and_usage(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(answer="Paris.", prompt_tokens=120, completion_tokens=7, cached_tokens=100)
    completion = strict(ChatCompletion, post(sim, {"model": "sim-gpt", "messages": MESSAGES}).json())
    assert completion.choices[0].message.content == "Paris."
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (120, 7, 127)
    assert (
        completion.usage.prompt_tokens_details and completion.usage.prompt_tokens_details.cached_tokens == 100
    )
    assert sim.wait_for_responses(1)[0].cached_tokens == 100


def test_default_answer_quotes_the_last_user_message(sim: OpenAISim) -> None:
    long = "word " * 30
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": long}]},
    ]
    completion = strict(ChatCompletion, post(sim, {"model": "sim-gpt", "messages": messages}).json())
    assert completion.choices[0].message.content == "Simulated answer to: " + long[:60]
    assert completion.usage is not None and completion.usage.prompt_tokens == 32


def test_stream_chunks_are_strict_and_end_with_usage_then_done(sim: OpenAISim) -> None:
    body = {
        "model": "sim-gpt",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = post(sim, body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_json(resp.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [strict(ChatCompletionChunk, data) for _, data in events[:-1]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "sim-gpt" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == len(ANSWER.split())  # one delta per word
    assert "".join(content) == ANSWER
    *_, final, usage_chunk = chunks
    assert final.choices[0].finish_reason == "stop"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump(exclude_none=True) == sim.wait_for_responses(1)[0].usage
    assert all(c.usage is None for c in chunks[:-1])
    assert sim.wait_for_responses(1)[0].chunks == len(events)


def test_stream_without_include_usage_has_no_usage_chunk(sim: OpenAISim) -> None:
    events = sse_json(post(sim, {"model": "sim-gpt", "messages": MESSAGES, "stream": True}).text)
    assert events[-1] == (None, "[DONE]")
    assert all("usage" not in data for _, data in events[:-1])
    assert events[-2][1]["choices"][0]["finish_reason"] == "stop"


def test_tool_call_json_and_stream(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Paris"}))
    completion = strict(
        ChatCompletion, post(sim, {"model": "sim-gpt", "messages": MESSAGES, "tools": TOOLS}).json()
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert sim.wait_for_responses(1)[0].tool_call == {
        "id": call.id,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }

    body = {"model": "sim-gpt", "messages": MESSAGES, "tools": TOOLS, "stream": True}
    events = sse_json(post(sim, body).text)
    chunks = [strict(ChatCompletionChunk, data) for _, data in events[:-1]]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == {
        "city": "Paris"
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_plan_needs_tools_in_the_request(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_call={"name": "get_weather", "arguments": {}})
    completion = strict(ChatCompletion, post(sim, {"model": "sim-gpt", "messages": MESSAGES}).json())
    assert (
        completion.choices[0].message.content == ANSWER and completion.choices[0].message.tool_calls is None
    )


def test_path_without_v1_and_models_list(sim: OpenAISim) -> None:
    assert post(sim, {"model": "m", "messages": MESSAGES}, path="/chat/completions").status_code == 200
    models = httpx.get(sim.base_url + "/v1/models", headers=AUTH).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["sim-gpt", "sim-gpt-mini"]
    assert httpx.get(sim.base_url + "/v1/models").status_code == 401
    assert [r.path for r in sim.requests] == ["/chat/completions", "/v1/models", "/v1/models"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer sk-wrong-secret-123"}, {"Authorization": KEY}]
)
def test_auth_failures_are_401_and_never_echo_the_key(sim: OpenAISim, headers: dict) -> None:
    resp = post(sim, {"model": "sim-gpt", "messages": MESSAGES}, headers=headers)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "sk-wrong" not in resp.text and KEY not in resp.text
    assert sim.wait_for_responses(1)[0].status == 401


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "service_unavailable", "service_unavailable"),
    ],
)
def test_error_bodies_match_openai(sim: OpenAISim, status: int, kind: str, code: str | None) -> None:
    sim.plan = FaultPlan.error(status, retry_after=1.5 if status == 429 else None)
    resp = post(sim, {"model": "sim-gpt", "messages": MESSAGES})
    assert resp.status_code == status
    assert resp.json()["error"]["type"] == kind and resp.json()["error"]["code"] == code
    assert ("retry-after" in resp.headers) == (status == 429)
    if status == 429:
        assert resp.headers["retry-after"] == "2" and resp.headers["retry-after-ms"] == "1500"


def test_invalid_requests_are_400(sim: OpenAISim) -> None:
    assert post(sim, {"messages": MESSAGES}).status_code == 400
    assert post(sim, {"model": "sim-gpt", "messages": []}).status_code == 400
    resp = httpx.post(sim.base_url + "/v1/chat/completions", content=b"{not json", headers=AUTH)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


# -- the official SDK -------------------------------------------------------------------


async def test_official_sdk_parses_json_stream_and_errors(sim: OpenAISim) -> None:
    client = openai.AsyncOpenAI(base_url=sim.base_url + "/v1", api_key=KEY, max_retries=0)
    completion = await client.chat.completions.create(model="sim-gpt", messages=MESSAGES)
    assert completion.choices[0].message.content == ANSWER
    assert completion.usage and completion.usage.total_tokens == 17

    stream = await client.chat.completions.create(
        model="sim-gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage and chunks[-1].usage.total_tokens == 17

    sim.plan = FaultPlan.rate_limited(retry_after=3, times=1)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="sim-gpt", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"
    await client.close()


# LiteLLM's openai provider: tests/sim/test_litellm_completions.py and test_litellm_errors.py.
