"""The official `openai` SDK, sync and async, against `llmgw serve` over the simulators:
completions, streams with include_usage, tool calls, and errors as the SDK's own classes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llmgw.budgets.rules import Rule
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.timespec import utcnow
from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.server.conftest import open_reservations
from tests.support import expected_cost_micros, ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

HI = [{"role": "user", "content": "Say hi"}]
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def set_budget(url: str, rule: Rule) -> None:
    engine = make_engine(url)
    try:
        BudgetStore(engine).set_rule(rule, utcnow())
    finally:
        engine.dispose()


def client(running, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url + "/v1", api_key=key, max_retries=0, **kw)


def test_completion_sync_headers_body_and_row(running):
    raw = client(running, running.key(agent_type="qa-engineer")).chat.completions \
        .with_raw_response.create(model="backup", messages=HI, max_tokens=50)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Simulated answer to: Say hi"
    assert answer.choices[0].finish_reason == "stop"
    (row,) = ledger_rows(running.ledger_url)
    assert (row["project_id"], row["agent_id"], row["agent_type"], row["status"]) == (
        "proj-a", "dev-1", "qa-engineer", "ok")
    assert raw.headers["x-llmgw-request-id"] == row["request_id"]
    assert raw.headers["x-llmgw-model-group"] == "backup"
    assert raw.headers["x-llmgw-deployment"] == "backup-openai"
    assert raw.headers["x-llmgw-cache"] == "miss"
    cost = expected_cost_micros("backup-openai", answer.usage.prompt_tokens,
                                answer.usage.completion_tokens)
    assert row["cost_micros"] == cost
    assert raw.headers["x-llmgw-cost-usd"] == f"{cost / 1_000_000:.6f}"
    assert answer.model_extra["llmgw"]["cost_micros"] == cost


async def test_completion_async_auto_routes_by_agent_type(running):
    key = running.key(agent="arch-1", agent_type="software-architect")
    async with openai.AsyncOpenAI(base_url=running.base_url + "/v1", api_key=key,
                                  max_retries=0) as aclient:
        raw = await aclient.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-llmgw-model-group"] == "primary"  # software-architect's group
    assert raw.parse().choices[0].message.content.startswith("Simulated answer")
    (row,) = ledger_rows(running.ledger_url)
    assert (row["agent_id"], row["model_group"], row["deployment_id"]) == (
        "arch-1", "primary", "primary-anthropic")


@pytest.mark.parametrize("use_async", [False, True])
async def test_stream_with_include_usage_ends_with_usage_and_facts(running, use_async):
    key = running.key()
    kwargs = dict(model="backup", messages=HI, stream=True,
                  stream_options={"include_usage": True})
    if use_async:
        async with openai.AsyncOpenAI(base_url=running.base_url + "/v1", api_key=key,
                                      max_retries=0) as aclient:
            chunks = [c async for c in await aclient.chat.completions.create(**kwargs)]
    else:
        chunks = list(client(running, key).chat.completions.create(**kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated answer to: Say hi"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    (row,) = ledger_rows(running.ledger_url)
    assert row["status"] == "ok" and row["stream"]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        row["prompt_tokens"], row["completion_tokens"])
    facts = last.model_extra["llmgw"]
    assert facts["request_id"] == row["request_id"]
    assert facts["cost_micros"] == row["cost_micros"] > 0
    assert (facts["model_group"], facts["deployment"], facts["cache"]) == (
        "backup", "backup-openai", "miss")


def test_stream_without_include_usage_puts_facts_on_the_finish_chunk(running):
    chunks = list(client(running, running.key()).chat.completions.create(
        model="backup", messages=HI, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    (row,) = ledger_rows(running.ledger_url)
    assert chunks[-1].model_extra["llmgw"]["request_id"] == row["request_id"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(running, sims, stream):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                     arguments={"city": "Paris"})))
    oa = client(running, running.key())
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls: dict[int, dict] = {}
        for chunk in oa.chat.completions.create(model="backup", messages=ask, tools=WEATHER,
                                                stream=True):
            for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = call["id"] or tc.id
                call["name"] = call["name"] or tc.function.name
                call["arguments"] += tc.function.arguments or ""
        (call,) = calls.values()
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        answer = oa.chat.completions.create(model="backup", messages=ask, tools=WEATHER)
        assert answer.choices[0].finish_reason == "tool_calls"
        (tc,) = answer.choices[0].message.tool_calls
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    # the tools reached the provider as sent
    assert openai_sim.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"
    openai_sim.set_plan(FaultPlan(answer="Sunny, 21 C."))
    final = oa.chat.completions.create(model="backup", tools=WEATHER, messages=[
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'}])
    assert final.choices[0].message.content == "Sunny, 21 C."
    sent = openai_sim.requests[-1].json["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == call_id
    assert [r["status"] for r in ledger_rows(running.ledger_url)] == ["ok", "ok"]


# -- errors, as the SDK's own exception classes ------------------------------------------------


def test_unknown_group_is_not_found_and_writes_nothing(running):
    with pytest.raises(openai.NotFoundError) as info:
        client(running, running.key()).chat.completions.create(model="nope", messages=HI)
    assert info.value.code == "model_not_found"
    assert ledger_rows(running.ledger_url) == []


def test_invalid_requests_are_400_and_write_nothing(running):
    oa = client(running, running.key())
    with pytest.raises(openai.BadRequestError) as info:
        oa.chat.completions.create(model="backup", messages=[])
    assert info.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="backup", messages=[{"role": "user", "content": ""}])
    with pytest.raises(openai.BadRequestError) as info:  # a LiteLLM-only knob is refused
        oa.chat.completions.create(model="backup", messages=HI,
                                   extra_body={"mock_response": "free"})
    assert "mock_response" in info.value.message
    response = httpx.post(running.base_url + "/v1/chat/completions", content=b"{not json",
                          headers={"authorization": f"Bearer {running.key()}",
                                   "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert ledger_rows(running.ledger_url) == []


def test_bad_keys_are_401_and_write_nothing(running):
    for key in ("llmgw-not-a-real-key", "sk-whatever"):
        with pytest.raises(openai.AuthenticationError) as info:
            client(running, key).chat.completions.create(model="backup", messages=HI)
        assert info.value.code == "invalid_api_key"
    response = httpx.post(running.base_url + "/v1/chat/completions",
                          json={"model": "backup", "messages": HI})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
    assert ledger_rows(running.ledger_url) == []


def test_body_over_the_limit_is_413_and_writes_nothing(running):
    big = [{"role": "user", "content": "x" * (128 * 1024)}]  # the fixture's limit is 64 KiB
    with pytest.raises(openai.APIStatusError) as info:
        client(running, running.key()).chat.completions.create(model="backup", messages=big)
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    assert ledger_rows(running.ledger_url) == []


def test_budget_exceeded_is_429_with_retry_after(running):
    set_budget(running.ledger_url, Rule("project", "proj-a", "day", 1, 0.8))
    with pytest.raises(openai.RateLimitError) as info:
        client(running, running.key()).chat.completions.create(model="backup", messages=HI,
                                                                 max_tokens=100)
    assert info.value.code == "budget_exceeded"
    retry_after = int(info.value.response.headers["retry-after"])
    assert 0 < retry_after <= 86_400  # the daily window's reset
    (row,) = ledger_rows(running.ledger_url)
    assert row["status"] == "refused"


def test_provider_rate_limit_is_429_with_retry_after(running, sims):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as info:
        client(running, running.key()).chat.completions.create(model="solo", messages=HI)
    assert info.value.code == "rate_limited"
    assert info.value.response.headers["retry-after"] == "7"


def test_provider_refusing_our_credentials_is_502_not_401(running):
    with pytest.raises(openai.InternalServerError) as info:
        client(running, running.key()).chat.completions.create(model="autho", messages=HI)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_authentication_failed"
    assert "SECRET" not in info.value.message


def test_every_deployment_failing_is_503(running, sims):
    for sim in sims:
        sim.set_plan(FaultPlan.error(500))
    with pytest.raises(openai.InternalServerError) as info:
        client(running, running.key()).chat.completions.create(model="primary", messages=HI)
    assert info.value.status_code == 503 and info.value.code == "all_deployments_failed"
    assert {r["status"] for r in ledger_rows(running.ledger_url)} == {"error"}
    assert open_reservations(running.ledger_url) == 0


def test_context_window_is_400_context_length_exceeded(running, sims):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.error(
        400, message="This model's maximum context length is 8192 tokens. However, your "
                     "messages resulted in 9000 tokens."))
    with pytest.raises(openai.BadRequestError) as info:
        client(running, running.key()).chat.completions.create(model="solo", messages=HI)
    assert info.value.code == "context_length_exceeded"


def test_models_lists_the_groups(running):
    ids = [m.id for m in client(running, running.key()).models.list()]
    assert ids == ["auto", "authg", "autho", "backup", "primary", "solo"]


def test_estimate_reserves_nothing_and_writes_nothing(running):
    response = httpx.post(running.base_url + "/v1/estimate",
                          headers={"authorization": f"Bearer {running.key()}"},
                          json={"model": "primary", "messages": HI, "max_tokens": 100})
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["model_group"] == "primary" and estimate["fallback_groups"] == ["backup"]
    assert estimate["worst_case_micros"] > 0
    assert ledger_rows(running.ledger_url) == []
