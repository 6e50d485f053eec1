"""The official `anthropic` SDK against `llmgw serve`'s /v1/messages over the simulators."""

from __future__ import annotations

import anthropic
import pytest

from llmgw.budgets import Rule
from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.server.test_openai_api import set_budget
from tests.support import ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

HI = [{"role": "user", "content": "Say hi"}]
WEATHER = [{"name": "get_weather", "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]


def client(running, key: str, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.base_url, api_key=key, max_retries=0, **kw)


def test_messages_create(running):
    raw = client(running, running.key()).messages.with_raw_response.create(
        model="backup", max_tokens=100, system="Be brief.", messages=HI)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Simulated answer to: Say hi"
    assert message.stop_reason == "end_turn"
    (row,) = ledger_rows(running.ledger_url)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        row["prompt_tokens"], row["completion_tokens"])
    assert raw.headers["x-llmgw-request-id"] == row["request_id"]
    assert raw.headers["x-llmgw-deployment"] == "backup-openai"
    assert (row["project_id"], row["agent_id"], row["status"]) == ("proj-a", "dev-1", "ok")


def test_messages_stream(running):
    with client(running, running.key()).messages.stream(
            model="primary", max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Simulated answer to: Say hi"
    assert final.stop_reason == "end_turn"
    (row,) = ledger_rows(running.ledger_url)
    assert row["stream"] and row["status"] == "ok" and row["deployment_id"] == "primary-anthropic"
    assert final.usage.output_tokens == row["completion_tokens"]


def test_stream_events_end_with_message_stop_carrying_the_facts(running):
    events = list(client(running, running.key()).messages.create(
        model="backup", max_tokens=100, messages=HI, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in types and "content_block_stop" in types
    (row,) = ledger_rows(running.ledger_url)
    facts = events[-1].model_extra["llmgw"]
    assert (facts["request_id"], facts["cost_micros"]) == (row["request_id"], row["cost_micros"])


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(running, sims, stream):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                     arguments={"city": "Paris"})))
    ac = client(running, running.key())
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with ac.messages.stream(model="backup", max_tokens=100, messages=ask,
                                tools=WEATHER) as s:
            message = s.get_final_message()
    else:
        message = ac.messages.create(model="backup", max_tokens=100, messages=ask, tools=WEATHER)
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    openai_sim.set_plan(FaultPlan(answer="Sunny, 21 C."))
    final = ac.messages.create(model="backup", max_tokens=100, tools=WEATHER, messages=[
        *ask, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": '{"temp_c": 21}'}]}])
    assert final.content[0].text == "Sunny, 21 C."
    sent = openai_sim.requests[-1].json["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == use.id


def test_any_agent_key_takes_the_agent_from_metadata_user_id(running):
    key = running.key(agent=None)
    with pytest.raises(anthropic.BadRequestError):
        client(running, key).messages.create(model="backup", max_tokens=50, messages=HI)
    client(running, key).messages.create(model="backup", max_tokens=50, messages=HI,
                                         metadata={"user_id": "bot-3"})
    (row,) = ledger_rows(running.ledger_url)
    assert row["agent_id"] == "bot-3"


def test_errors_in_anthropic_shape(running):
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(running, "llmgw-wrong").messages.create(model="backup", max_tokens=50,
                                                       messages=HI)
    assert info.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as info:
        client(running, running.key()).messages.create(model="claude-nope", max_tokens=50,
                                                       messages=HI)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client(running, running.key()).messages.create(model="backup", max_tokens=0,
                                                       messages=HI)
    assert ledger_rows(running.ledger_url) == []
    with pytest.raises(anthropic.InternalServerError) as info:  # the provider refused us
        client(running, running.key()).messages.create(model="authg", max_tokens=50,
                                                       messages=HI)
    assert info.value.status_code == 502
    assert info.value.body["error"]["type"] == "api_error"


def test_budget_refusal_is_a_rate_limit_error(running):
    set_budget(running.ledger_url, Rule("project", "proj-a", "day", 1, 0.8))
    with pytest.raises(anthropic.RateLimitError) as info:
        client(running, running.key()).messages.create(model="backup", max_tokens=50,
                                                       messages=HI)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) > 0
