"""OpenAI-side clients through `llmgw serve`'s Responses front: the official Python SDK, the OpenAI
TS SDK and Vercel AI SDK scripts (tests/clients/*.mjs), and the OpenAI Agents SDK's default
Runner (Responses API). Each names its session with `X-LLMGW-Session`; each run's ledger rows
belong to the key's project and agent, cost money and leave no reservation open.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.clients.recorder_openai import OpenAIRecorder
from tests.clients.run import node_script, openai_env
from tests.e2e.conftest import AGENT, PROJECT, Gateway

SESSION = "e2e-openai-session"
ANSWER = "Hello from the gateway."


def assert_ledger(gw: Gateway, count: int) -> None:
    rows = gw.rows()
    assert [r["status"] for r in rows] == ["ok"] * count, rows
    for row in rows:
        assert (row["project_id"], row["agent_id"], row["model_group"]) == (PROJECT, AGENT, "high-reasoning")
        assert row["cost_micros"] > 0 and row.get("session_id") == SESSION, row
    assert gw.open_reservations() == 0


def sdk(gw: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key or gw.api_key, max_retries=0,
                         default_headers={"X-LLMGW-Session": SESSION})


# --- the harness, against the recording stand-in -------------------------------------------------


def test_harness_ts_sdk_script(openai_recorder: OpenAIRecorder) -> None:
    env = openai_env(base_url=openai_recorder.base_url, api_key="sk-a-0123456789",
                     OTHER_API_KEY="sk-b-0123456789", LLMGW_SESSION=SESSION)
    out = node_script("openai_responses", env)
    assert out["ok"] is True, out
    assert out["json"]["text"] == out["stream"]["text"] == "Hello from the recorder."
    assert out["chain"]["previous_response_id"] == out["json"]["id"]
    assert (out["other_project"]["status"], out["other_project"]["class"]) == (404, "NotFoundError")
    assert {r.headers.get("x-llmgw-session") for r in openai_recorder.requests} == {SESSION}


def test_harness_vercel_script(openai_recorder: OpenAIRecorder) -> None:
    openai_recorder.tool_name, openai_recorder.tool_arguments = "weather", {"city": "Paris"}
    out = node_script("vercel_ai", openai_env(base_url=openai_recorder.base_url, api_key="sk-a-0123456789",
                                              LLMGW_SESSION=SESSION))
    assert out["ok"] is True, out
    for run in (out["generate"], out["stream"]):
        assert "sunny-over-Paris" in run["text"] and run["steps"][0]["tool_calls"] == ["weather"]
    assert [r.path for r in openai_recorder.requests] == ["/v1/responses"] * 4


# --- through the gateway -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_python_sdk_json_stream_chain_and_other_project(start_gateway: Any, backend: str) -> None:
    gw = start_gateway(backend, FaultPlan(answer=ANSWER))
    client = sdk(gw)
    first = client.responses.create(model="gpt-5.5", input="Say hello")
    assert first.output_text == ANSWER and first.usage is not None and first.usage.output_tokens > 0
    with client.responses.create(model="gpt-5.5", input="Again", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    chained = client.responses.create(model="gpt-5.5", input="And then?", previous_response_id=first.id)
    assert chained.previous_response_id == first.id and chained.output_text == ANSWER
    with pytest.raises(openai.NotFoundError):
        sdk(gw, gw.other_project_key()).responses.retrieve(first.id)
    assert_ledger(gw, 3)


def test_python_sdk_budget_refusal_is_a_rate_limit_error(start_gateway: Any) -> None:
    gw = start_gateway("openai", FaultPlan(answer=ANSWER))
    gw.set_tiny_budget()
    with pytest.raises(openai.RateLimitError):
        sdk(gw).responses.create(model="gpt-5.5", input="Say hello")
    assert [r["status"] for r in gw.rows()] == ["refused"] and gw.open_reservations() == 0


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_ts_sdk_script(start_gateway: Any, backend: str) -> None:
    gw = start_gateway(backend, FaultPlan(answer=ANSWER))
    env = openai_env(base_url=gw.base_url, api_key=gw.api_key, OTHER_API_KEY=gw.other_project_key(),
                     LLMGW_SESSION=SESSION)
    out = node_script("openai_responses", env)
    assert out["ok"] is True, out
    assert out["json"]["text"] == out["stream"]["text"] == out["chain"]["text"] == ANSWER
    assert out["chain"]["previous_response_id"] == out["json"]["id"]
    assert out["other_project"]["status"] == 404, out
    assert_ledger(gw, 3)


def test_ts_sdk_budget_refusal(start_gateway: Any) -> None:
    gw = start_gateway("openai", FaultPlan(answer=ANSWER))
    gw.set_tiny_budget()
    out = node_script("openai_responses", openai_env(base_url=gw.base_url, api_key=gw.api_key))
    assert out["ok"] is False and (out["error"]["status"], out["error"]["class"]) == (429, "RateLimitError")
    assert gw.open_reservations() == 0


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_vercel_ai_tool_loop(start_gateway: Any, backend: str) -> None:
    gw = start_gateway(backend, FaultPlan(tool_loop=[ToolCall(name="weather",
                                                              arguments={"city": "Paris"})]))
    env = openai_env(base_url=gw.base_url, api_key=gw.api_key, LLMGW_SESSION=SESSION)
    out = node_script("vercel_ai", env)
    assert out["ok"] is True, out
    for run in (out["generate"], out["stream"]):
        assert "sunny-over-Paris" in run["text"] and run["steps"][0]["tool_calls"] == ["weather"]
    assert out["executed"] == ["Paris", "Paris"]
    assert_ledger(gw, 4)


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
async def test_agents_sdk_runner_with_a_function_tool(start_gateway: Any, backend: str) -> None:
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    gw = start_gateway(backend, FaultPlan(tool_loop=[ToolCall(name="get_weather",
                                                              arguments={"city": "Oslo"})]))
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The forecast for a city."""
        seen.append(city)
        return f"snow-over-{city}"

    set_tracing_disabled(True)  # traces would go to api.openai.com
    set_default_openai_client(openai.AsyncOpenAI(base_url=gw.base_url + "/v1", api_key=gw.api_key,
                                                 max_retries=0, default_headers={"X-LLMGW-Session": SESSION}))
    agent = Agent(name="weather", instructions="Use the tool.", model="gpt-5.5", tools=[get_weather])
    result = await Runner.run(agent, "Weather in Oslo?")
    assert seen == ["Oslo"] and "snow-over-Oslo" in str(result.final_output)
    assert_ledger(gw, 2)
