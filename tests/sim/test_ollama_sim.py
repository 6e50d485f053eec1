"""OllamaSim against Ollama's own client types and LiteLLM's ``ollama_chat/`` and ``ollama/`` providers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama  # the official client (dev extra): its types are the schema
import pytest
from pydantic import BaseModel

from llmgw.sim.faults import FaultPlan, ToolCall
from llmgw.sim.ollama import OllamaSim
from tests.sim.conftest import fresh

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
BODY = {"model": "llama3.2", "messages": MESSAGES, "stream": False}


@pytest.fixture(scope="module")
def server() -> Iterator[OllamaSim]:
    with OllamaSim() as sim:
        yield sim


@pytest.fixture
def sim(server: OllamaSim) -> OllamaSim:
    return fresh(server)  # type: ignore[return-value]


def post(sim: OllamaSim, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=body, timeout=5, **kw)


def known(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate with the client's type and require every key to be one of its fields
    (Ollama's types ignore unknown keys, so a typo would otherwise pass)."""
    names = {n for n, f in model.model_fields.items()} | {
        f.alias for f in model.model_fields.values() if f.alias
    }
    assert set(data) <= names, f"unknown keys for {model.__name__}: {sorted(set(data) - names)}"
    return model.model_validate(data)


def chat_bodies(sim: OllamaSim, path: str = "/api/chat") -> list[dict[str, Any]]:
    """Bodies of the generation requests. LiteLLM also POSTs /api/show, sometimes from a
    background thread after the call (model info for cost and tool support), so the
    request list is filtered rather than indexed."""
    return [r.json for r in sim.requests if r.path == path]


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- wire format -----------------------------------------------------------------------


def test_chat_json_matches_ollama_types(sim: OllamaSim) -> None:
    resp = post(sim, "/api/chat", BODY)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    chat = known(ollama.ChatResponse, data)
    known(ollama.Message, data["message"])
    assert chat.model == "llama3.2" and chat.done is True and chat.done_reason == "stop"
    assert chat.message.role == "assistant" and chat.message.content == ANSWER
    assert data["created_at"].endswith("Z")
    assert (chat.prompt_eval_count, chat.eval_count) == (8, 9)  # words of the prompt / answer
    assert chat.total_duration == chat.load_duration + chat.prompt_eval_duration + chat.eval_duration
    [record] = sim.wait_for_responses(1)
    assert (record.status, record.answer, record.model, record.stream) == (200, ANSWER, "llama3.2", False)
    assert record.usage == {k: data[k] for k in record.usage}
    assert (record.prompt_tokens, record.completion_tokens) == (8, 9)


def test_chat_streams_ndjson_by_default_and_ends_with_done(sim: OllamaSim) -> None:
    sim.plan = FaultPlan(answer="Paris is the capital.", prompt_tokens=30, completion_tokens=5)
    resp = post(sim, "/api/chat", {"model": "llama3.2", "messages": MESSAGES})  # no "stream": streams
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(resp.text)
    parts = [known(ollama.ChatResponse, line) for line in lines]
    assert all(not p.done for p in parts[:-1]) and parts[-1].done is True
    assert "".join(p.message.content or "" for p in parts) == "Paris is the capital."
    assert len(parts) == 1 + len("Paris is the capital.".split())
    assert all(set(line) == {"model", "created_at", "message", "done"} for line in lines[:-1])
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert (final["prompt_eval_count"], final["eval_count"]) == (30, 5)
    record = sim.wait_for_responses(1)[0]
    assert record.stream and record.chunks == len(lines)
    assert record.usage == {k: final[k] for k in record.usage}


def test_generate_json_and_stream(sim: OllamaSim) -> None:
    body = {"model": "llama3.2", "prompt": "Why is the sky blue?", "system": "Be brief.", "stream": False}
    data = post(sim, "/api/generate", body).json()
    gen = known(ollama.GenerateResponse, data)
    assert gen.response == "Simulated answer to: Why is the sky blue?" and gen.done
    assert gen.prompt_eval_count == 7 and gen.context == list(range(1, 7 + 8 + 1))
    lines = ndjson(post(sim, "/api/generate", {**body, "stream": True}).text)
    parts = [known(ollama.GenerateResponse, line) for line in lines]
    assert "".join(p.response for p in parts) == gen.response and parts[-1].done
    assert [r.path for r in sim.requests] == ["/api/generate", "/api/generate"]


def test_tool_call_json_and_stream(sim: OllamaSim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Paris"}))
    data = post(sim, "/api/chat", {**BODY, "tools": TOOLS}).json()
    chat = known(ollama.ChatResponse, data)
    [call] = data["message"]["tool_calls"]
    assert call == {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert chat.message.tool_calls[0].function.arguments == {"city": "Paris"}
    lines = ndjson(post(sim, "/api/chat", {**BODY, "tools": TOOLS, "stream": True}).text)
    assert [line["message"].get("tool_calls") for line in lines[:-1]] == [[call]]
    assert lines[-1]["done"] is True
    # Without tools in the request the plan's tool call is not made.
    assert post(sim, "/api/chat", BODY).json()["message"]["content"] == ANSWER


def test_tags_version_show_and_root(sim: OllamaSim) -> None:
    tags = httpx.get(sim.base_url + "/api/tags").json()
    listed = known(ollama.ListResponse, tags)
    assert [m["name"] for m in tags["models"]] == ["llama3.2:latest", "qwen2.5-coder:0.5b"]
    for raw, model in zip(tags["models"], listed.models, strict=True):
        assert set(raw) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert model.model == raw["name"] and len(model.digest or "") == 64
        assert model.details and model.details.format == "gguf"
    assert httpx.get(sim.base_url + "/api/version").json() == {"version": OllamaSim.version}
    show = known(ollama.ShowResponse, post(sim, "/api/show", {"model": "llama3.2"}).json())
    assert show.capabilities == ["completion", "tools"] and show.modelinfo
    assert post(sim, "/api/show", {}).status_code == 400
    assert httpx.get(sim.base_url + "/").text == "Ollama is running"
    assert [r.path for r in sim.requests] == ["/api/tags", "/api/version", "/api/show", "/api/show", "/"]


def test_official_client_round_trip(sim: OllamaSim) -> None:
    client = ollama.Client(host=sim.base_url)
    assert client.chat(model="llama3.2", messages=MESSAGES).message.content == ANSWER
    parts = client.chat(model="llama3.2", messages=MESSAGES, stream=True)
    streamed = "".join(p.message.content or "" for p in parts)
    assert streamed == ANSWER
    assert [m.model for m in client.list().models] == ["llama3.2:latest", "qwen2.5-coder:0.5b"]
    sim.plan = FaultPlan.error(404, message='model "nope" not found, try pulling it first')
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope", messages=MESSAGES)
    assert caught.value.status_code == 404 and "try pulling it" in caught.value.error


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_errors_are_ollama_shaped(sim: OllamaSim, status: int) -> None:
    sim.plan = FaultPlan.error(status, retry_after=2 if status == 429 else None)
    resp = post(sim, "/api/chat", BODY)
    assert resp.status_code == status
    assert set(resp.json()) == {"error"} and resp.json()["error"]
    assert ("retry-after" in resp.headers) == (status == 429)


def test_no_auth_by_default_but_an_api_key_can_be_required(sim: OllamaSim) -> None:
    assert post(sim, "/api/chat", BODY, headers={"Authorization": "Bearer anything"}).status_code == 200
    with OllamaSim(api_key="sk-proxy") as guarded:
        refused = httpx.post(guarded.base_url + "/api/chat", json=BODY)
        assert refused.status_code == 401 and refused.json() == {"error": "unauthorized"}
        ok = httpx.post(guarded.base_url + "/api/chat", json=BODY,
                        headers={"Authorization": "Bearer sk-proxy"})
        assert ok.status_code == 200
        assert httpx.get(guarded.base_url + "/api/tags").status_code == 401


def test_invalid_requests_are_400(sim: OllamaSim) -> None:
    assert post(sim, "/api/chat", {"messages": MESSAGES}).json() == {"error": "model is required"}
    assert post(sim, "/api/chat", {"model": "m", "messages": [{"role": "bot"}]}).status_code == 400
    assert post(sim, "/api/generate", {"model": "m", "prompt": 3}).status_code == 400
    resp = httpx.post(sim.base_url + "/api/chat", content=b"{nope")
    assert resp.status_code == 400 and "error" in resp.json()


# -- LiteLLM's ollama_chat / ollama providers -------------------------------------------


def kwargs(sim: OllamaSim, **extra: Any) -> dict[str, Any]:
    return {"model": "ollama_chat/llama3.2", "api_base": sim.base_url, "messages": MESSAGES,
            "num_retries": 0, **extra}


async def test_litellm_ollama_provider_uses_generate(sim: OllamaSim, litellm) -> None:
    resp = await litellm.acompletion(**kwargs(sim, model="ollama/llama3.2"))
    [record] = sim.wait_for_responses(1)
    assert chat_bodies(sim, "/api/generate") and resp.model == "ollama/llama3.2"
    assert resp.choices[0].message.content == record.answer
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (record.prompt_tokens,
                                                                        record.completion_tokens)


async def test_litellm_stream_dropped_mid_way_raises(sim: OllamaSim, litellm) -> None:
    sim.plan = FaultPlan.drop(after_chunks=3)
    with pytest.raises(litellm.ServiceUnavailableError):  # MidStreamFallbackError
        stream = await litellm.acompletion(**kwargs(sim, stream=True))
        _ = [chunk async for chunk in stream]
    assert sim.wait_for_responses(1)[0].chunks == 3


async def test_litellm_ignores_a_malformed_stream_line(sim: OllamaSim, litellm) -> None:
    # A LiteLLM quirk worth knowing: its stream iterator skips lines that are not JSON,
    # so a broken Ollama stream ends "successfully" with no content and no usage.
    sim.plan = FaultPlan.malformed()
    stream = await litellm.acompletion(**kwargs(sim, stream=True))
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    async with httpx.AsyncClient() as client:
        raw = (await client.post(sim.base_url + "/api/chat", json={**BODY, "stream": True})).text
    with pytest.raises(ValueError):
        json.loads(raw.splitlines()[0])
