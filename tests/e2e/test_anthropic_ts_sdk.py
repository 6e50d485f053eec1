"""The official Anthropic TypeScript SDK (pinned, tests/clients/*.mjs) through `llmgw serve`.

Each script takes ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY / MODEL from its environment and prints one
JSON object with what the SDK parsed. MODEL is a provider model name, reaching its group through
`llmgw.model_aliases` as a coding agent's would.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.clients.run import node_script
from tests.e2e.conftest import AGENT, PROJECT, Gateway, expected_cost_micros

MODEL = "claude-sonnet-4-5"  # claude-* -> high-reasoning


def sdk(gw: Gateway, script: str) -> dict[str, Any]:
    out = node_script(script, {"ANTHROPIC_BASE_URL": gw.base_url, "ANTHROPIC_API_KEY": gw.api_key,
                               "MODEL": MODEL})
    assert out.pop("ok") is True, out
    return out


def messages_sent(gw: Gateway) -> list[Any]:
    return [r for r in gw.anthropic.requests if r.path == "/v1/messages"]


def test_count_tokens_is_answered_and_not_recorded(start_gateway: Any) -> None:
    gw = start_gateway("anthropic")
    out = sdk(gw, "count_tokens")
    assert isinstance(out["input_tokens"], int) and out["input_tokens"] > 0
    assert gw.rows() == [] and gw.open_reservations() == 0


def test_models_list_names_the_groups(start_gateway: Any) -> None:
    gw = start_gateway("anthropic")
    models = sdk(gw, "models_list")["models"]
    assert {"fast-response", "high-reasoning"} <= {m["id"] for m in models}
    assert {m["type"] for m in models} == {"model"}
    assert gw.rows() == []


def test_message_is_priced_in_the_ledger(start_gateway: Any) -> None:
    gw = start_gateway("anthropic", FaultPlan(answer="Hello in five words, friend."))
    out = sdk(gw, "message")
    assert (out["type"], out["role"], out["stop_reason"]) == ("message", "assistant", "end_turn")
    assert out["content"] == [{"type": "text", "text": "Hello in five words, friend."}]
    assert out["headers"]["x-llmgw-model-group"] == "high-reasoning"
    (row,) = gw.rows()
    assert (row["status"], row["project_id"], row["agent_id"]) == ("ok", PROJECT, AGENT)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        out["usage"]["input_tokens"], out["usage"]["output_tokens"])
    assert row["cost_micros"] == expected_cost_micros("reasoning-anthropic", row["prompt_tokens"],
                                                      row["completion_tokens"]) > 0
    assert Decimal(out["headers"]["x-llmgw-cost-usd"]) * 1_000_000 == row["cost_micros"]
    assert gw.open_reservations() == 0


def test_thinking_and_tool_round_trip(start_gateway: Any) -> None:
    plan = FaultPlan(tool_loop=[ToolCall(name="get_weather", arguments={"city": "Paris"})])
    gw = start_gateway("anthropic", plan)
    out = sdk(gw, "thinking_tools")
    first = out["first_content"]
    assert [b["type"] for b in first] == ["thinking", "tool_use"] and first[0]["signature"], out
    assert first[1]["input"] == {"city": "Paris"} and out["first_stop_reason"] == "tool_use"
    assert out["second_content"][-1] == {"type": "text", "text": "The tool returned: Sunny, 21 C"}
    assert out["second_stop_reason"] == "end_turn"
    one, two = messages_sent(gw)
    # LiteLLM's native path sends thinking on, in the form the model takes (adaptive for the
    # models that have it): what the SDK asked, as LiteLLM 1.106.2 passes it through.
    assert one.json["thinking"]["type"] in {"enabled", "adaptive"}
    # The assistant turn reaches Anthropic exactly as the SDK got it: thinking text and signature.
    assert two.json["messages"][1] == {"role": "assistant", "content": first}
    assert all(r.fault != "invalid_thinking" for r in gw.anthropic.responses)
    rows = gw.rows()
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["cost_micros"] > 0 for r in rows)
    assert gw.open_reservations() == 0


def test_stream_final_usage_carries_cache_tokens(start_gateway: Any) -> None:
    gw = start_gateway("anthropic", FaultPlan(answer="One two three.", cached_tokens=3,
                                              cache_write_5m_tokens=4))
    out = sdk(gw, "stream_usage")
    assert out["text"] == "One two three." and out["stop_reason"] == "end_turn"
    assert out["events"][0] == "message_start" and out["events"][-2:] == ["message_delta", "message_stop"]
    assert (out["usage"]["cache_read_input_tokens"], out["usage"]["cache_creation_input_tokens"]) == (3, 4)
    (row,) = gw.rows()
    assert (row["status"], row["stream"], row["cache_read_tokens"]) == ("ok", True, 3)
    assert row["cost_micros"] > 0 and gw.open_reservations() == 0
