"""The official `anthropic` SDK against `llmgw serve`'s /v1/messages over the simulators."""

from __future__ import annotations

import json

import anthropic
import pytest

from llmgw.budgets.rules import Rule
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


def _claude_code_request() -> tuple[dict, dict]:
    """A request Claude Code 2.1.332 sent (tests/fixtures/claude_code), body and headers."""
    import json
    from pathlib import Path

    captured = json.loads((Path(__file__).parents[1] / "fixtures" / "claude_code"
                           / "plain_prompt.json").read_text())
    sent = next(r for r in captured["requests"] if r["path"] == "/v1/messages")
    return sent["body"], sent["headers"]


@pytest.mark.parametrize("stream", [False, True])
def test_claude_codes_own_request_is_taken_whole(running, sims, stream):
    """Every field Claude Code sends (thinking, context_management, output_config, a system
    message inside `messages`, cache_control, its tools) is accepted, never a 400 of ours, and
    the Anthropic deployment gets the body and betas as sent."""
    import httpx

    _, anthropic_sim = sims
    body, headers = _claude_code_request()
    body = {**body, "model": "primary", "stream": stream}
    response = httpx.post(f"{running.base_url}/v1/messages", json=body, timeout=60, headers={
        "x-api-key": running.key(), "anthropic-version": headers["anthropic-version"],
        "anthropic-beta": headers["anthropic-beta"]})
    assert response.status_code == 200, response.text
    (sent,) = [r for r in anthropic_sim.requests if r.path == "/v1/messages"]
    for field in ("system", "context_management", "metadata", "max_tokens"):
        assert sent.json[field] == body[field], field
    # Every tool as sent (LiteLLM 1.106.2 copies a deferred tool's `defer_loading` into its
    # schema as well; nothing is taken away).
    assert [t["name"] for t in sent.json["tools"]] == [t["name"] for t in body["tools"]]
    for mine, theirs in zip(body["tools"], sent.json["tools"], strict=True):
        assert {k: theirs[k] for k in mine if k != "input_schema"} == {
            k: v for k, v in mine.items() if k != "input_schema"}
        assert theirs["input_schema"].items() >= mine["input_schema"].items()
    assert sent.json["messages"] == body["messages"]
    assert "claude-code-20250219" in sent.headers["anthropic-beta"]
    (row,) = ledger_rows(running.ledger_url)
    assert row["status"] == "ok" and row["dialect"] == "anthropic" and row["stream"] is stream
    session = json.loads(body["metadata"]["user_id"])["session_id"]
    assert row["session_id"] == session and row["agent_id"] == "dev-1"


def test_an_unknown_field_is_passed_on_and_a_bad_one_is_a_clear_400(running, sims):
    import httpx

    _, anthropic_sim = sims
    url, key = f"{running.base_url}/v1/messages", running.key()
    ok = httpx.post(url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, json={
        "model": "primary", "max_tokens": 50, "messages": HI, "brand_new_field": {"on": True}})
    assert ok.status_code == 200, ok.text
    assert anthropic_sim.requests[-1].json["brand_new_field"] == {"on": True}
    bad = httpx.post(url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, json={
        "model": "primary", "max_tokens": 0, "messages": []})
    assert bad.status_code == 400
    assert bad.json()["type"] == "error" and "max_tokens" in bad.json()["error"]["message"]
    assert len(ledger_rows(running.ledger_url)) == 1  # the bad request wrote nothing
