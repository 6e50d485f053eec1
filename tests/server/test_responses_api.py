"""The official `openai` SDK's Responses API against `llmgw serve`'s /v1/responses, over the
simulators (the Anthropic-backed group: LiteLLM's chat bridge)."""

from __future__ import annotations

import httpx
import openai
import pytest

from llmgw.budgets.rules import Rule
from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.server.conftest import open_reservations
from tests.server.test_openai_api import set_budget
from tests.support import ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

EXEC = [{"type": "function", "name": "exec_command", "description": "Run a command",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                        "required": ["cmd"]}},
        {"type": "web_search"}]


def client(running, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url + "/v1", api_key=key, max_retries=0, **kw)


def test_create_json_headers_and_row(running):
    raw = client(running, running.key()).responses.with_raw_response.create(
        model="primary", input="Say hi", instructions="Be brief.", max_output_tokens=100,
        extra_headers={"X-LLMGW-Session": "run-7"})
    response = raw.parse()
    assert response.output_text == "Simulated answer to: Say hi"
    assert response.status == "completed"
    (row,) = ledger_rows(running.ledger_url)
    assert (row["status"], row["dialect"], row["session_id"], row["agent_id"]) == (
        "ok", "responses", "run-7", "dev-1")
    assert raw.headers["x-llmgw-request-id"] == row["request_id"]
    assert row["cost_micros"] > 0 and row["prompt_tokens"] == response.usage.input_tokens


def test_stream_events_end_with_completed_carrying_the_facts(running):
    events = list(client(running, running.key()).responses.create(
        model="primary", input="Say hi", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Simulated answer to: Say hi"
    (row,) = ledger_rows(running.ledger_url)
    assert events[-1].model_extra["llmgw"]["request_id"] == row["request_id"]
    assert row["stream"] and row["status"] == "ok" and row["dialect"] == "responses"


def test_a_tool_loop_continues_by_previous_response_id_and_drops_what_the_deployment_cannot_run(
        running, sims):
    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(tool_loop=[ToolCall(name="exec_command",
                                                         arguments={"cmd": "ls"})]))
    sdk = client(running, running.key())
    first = sdk.responses.create(model="primary", input="List the files.", tools=EXEC,
                                 parallel_tool_calls=True, tool_choice="auto")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "exec_command"
    second = sdk.responses.create(model="primary", previous_response_id=first.id, tools=EXEC,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": "notes.txt"}])
    assert "notes.txt" in second.output_text
    # the history went to the provider: the first turn's question and the tool's call
    sent = anthropic_sim.requests[-1].json
    assert "List the files." in str(sent["messages"]) and "exec_command" in str(sent["messages"])
    assert [t["name"] for t in sent["tools"]] == ["exec_command"]  # web_search left out
    rows = ledger_rows(running.ledger_url)
    assert (rows[0]["metadata"] or {}).get("provider_details") == {
        "dropped_tool_types": ["web_search"]}
    fetched = httpx.get(f"{running.base_url}/v1/responses/{first.id}",
                        headers={"Authorization": f"Bearer {running.key()}"})
    assert fetched.status_code == 200 and fetched.json()["id"] == first.id


def test_another_projects_response_is_not_found(running):
    mine = client(running, running.key()).responses.create(model="primary", input="Say hi")
    other = client(running, running.key(project="proj-b"))
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model="primary", previous_response_id=mine.id, input="And?")
    assert info.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    assert [r["project_id"] for r in ledger_rows(running.ledger_url)] == ["proj-a"]


def test_store_false_keeps_nothing_to_continue(running):
    sdk = client(running, running.key())
    first = sdk.responses.create(model="primary", input="Say hi", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="primary", previous_response_id=first.id, input="And?")


def test_budget_refusal_is_a_rate_limit_error(running):
    set_budget(running.ledger_url, Rule("project", "proj-a", "day", 1, 0.8))
    with pytest.raises(openai.RateLimitError) as info:
        client(running, running.key()).responses.create(model="primary", input="Say hi",
                                                        max_output_tokens=50)
    assert info.value.body["code"] == "budget_exceeded"
    (row,) = ledger_rows(running.ledger_url)
    assert (row["status"], row["dialect"]) == ("refused", "responses")
    assert open_reservations(running.ledger_url) == 0


def test_a_websocket_upgrade_is_refused_at_once(running):
    response = httpx.get(f"{running.base_url}/v1/responses", timeout=10, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Authorization": f"Bearer {running.key()}"})
    assert 400 <= response.status_code < 500
