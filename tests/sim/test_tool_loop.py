"""The scripted agent loop (`FaultPlan.tool_loop`): a tool call where the tool is offered, then
text quoting the tool's result; plain text where it is not. Anthropic and OpenAI, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmgw.sim import AnthropicSim, Fault, FaultPlan, OpenAISim, ToolCall
from tests.sim import sse_json
from tests.sim.conftest import fresh

BASH = ToolCall(name="Bash", arguments={"command": "ls /tmp/x"})
OUTPUT = "a.txt\nb.txt  (2 files)"


def anthropic_tool(name: str) -> dict:
    return {"name": name, "description": f"The {name} tool", "input_schema": {"type": "object"}}


def openai_tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


# Like Claude Code: many tools, Bash among them.
AGENT_TOOLS = ["Task", "Glob", "Grep", "Read", "Edit", "Write", "Bash", "WebFetch", "TodoWrite"]


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[AnthropicSim]:
    with AnthropicSim() as sim:
        yield sim


@pytest.fixture
def claude(anthropic_server: AnthropicSim) -> AnthropicSim:
    sim = fresh(anthropic_server)
    sim.plan = FaultPlan(tool_loop=[BASH])
    return sim  # type: ignore[return-value]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAISim]:
    with OpenAISim() as sim:
        yield sim


@pytest.fixture
def gpt(openai_server: OpenAISim) -> OpenAISim:
    sim = fresh(openai_server)
    sim.plan = FaultPlan(tool_loop=[BASH])
    return sim  # type: ignore[return-value]


def messages(sim: AnthropicSim, messages: list[dict], tools: list[str] | None, **extra: object) -> dict:
    body: dict = {"model": "claude-sonnet-4-5", "max_tokens": 512, "messages": messages, **extra}
    if tools is not None:
        body["tools"] = [anthropic_tool(t) for t in tools]
    resp = httpx.post(sim.base_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def chat(sim: OpenAISim, messages: list[dict], tools: list[str] | None) -> dict:
    body: dict = {"model": "gpt-4o", "messages": messages}
    if tools is not None:
        body["tools"] = [openai_tool(t) for t in tools]
    resp = httpx.post(sim.base_url + "/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


ASK_CLAUDE = [{"role": "user", "content": [{"type": "text", "text": "List /tmp/x"}]}]
ASK_GPT = [{"role": "user", "content": "List /tmp/x"}]


# -- Anthropic --------------------------------------------------------------------------


def test_anthropic_loop_calls_the_offered_tool_then_quotes_its_result(claude: AnthropicSim) -> None:
    first = messages(claude, ASK_CLAUDE, AGENT_TOOLS)
    assert first["stop_reason"] == "tool_use"
    [use] = first["content"]
    assert (use["type"], use["name"], use["input"]) == ("tool_use", "Bash", {"command": "ls /tmp/x"})
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": OUTPUT}
    follow = [
        *ASK_CLAUDE,
        {"role": "assistant", "content": first["content"]},
        {
            "role": "user",
            "content": [result, {"type": "text", "text": "<system-reminder>x</system-reminder>"}],
        },
    ]
    final = messages(claude, follow, AGENT_TOOLS)
    assert final["stop_reason"] == "end_turn"
    assert final["content"] == [{"type": "text", "text": f"The tool returned: {OUTPUT}"}]
    records = claude.wait_for_responses(2)
    assert records[0].tool_call["name"] == "Bash" and records[1].answer == f"The tool returned: {OUTPUT}"


def test_anthropic_tool_result_given_as_text_blocks(claude: AnthropicSim) -> None:
    blocks = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    follow = [
        *ASK_CLAUDE,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": blocks}]},
    ]
    final = messages(claude, follow, AGENT_TOOLS)
    assert final["content"][0]["text"] == "The tool returned: line one\nline two"


@pytest.mark.parametrize("tools", [None, [], ["Read", "Grep"]], ids=["no-tools", "empty", "other-tools"])
def test_anthropic_requests_not_offering_the_tool_get_plain_text(
    claude: AnthropicSim, tools: list | None
) -> None:
    answer = messages(claude, ASK_CLAUDE, tools)
    assert answer["stop_reason"] == "end_turn"
    assert answer["content"] == [{"type": "text", "text": "Simulated answer to: List /tmp/x"}]


def test_anthropic_loop_streams_the_call_and_thinks_first(claude: AnthropicSim) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "messages": ASK_CLAUDE,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [anthropic_tool(t) for t in AGENT_TOOLS],
    }
    resp = httpx.post(
        claude.base_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    starts = [d["content_block"] for name, d in sse_json(resp.text) if name == "content_block_start"]
    assert [(b["type"], b.get("name")) for b in starts] == [("thinking", None), ("tool_use", "Bash")]
    partial = "".join(
        d["delta"]["partial_json"]
        for name, d in sse_json(resp.text)
        if name == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"command": "ls /tmp/x"}


def test_first_matching_entry_decides_and_a_nameless_entry_takes_any_tool(claude: AnthropicSim) -> None:
    claude.plan = FaultPlan(
        tool_loop=[ToolCall(name="Read", arguments={"file_path": "/a"}), BASH, ToolCall(arguments={"q": 1})]
    )
    assert messages(claude, ASK_CLAUDE, ["Bash", "Read"])["content"][0]["name"] == "Read"
    assert messages(claude, ASK_CLAUDE, ["Bash"])["content"][0]["name"] == "Bash"
    [use] = messages(claude, ASK_CLAUDE, ["WebSearch"])["content"]
    assert (use["name"], use["input"]) == ("WebSearch", {"q": 1})


# -- OpenAI chat ------------------------------------------------------------------------


def test_openai_loop_calls_the_offered_tool_then_quotes_its_result(gpt: OpenAISim) -> None:
    first = chat(gpt, ASK_GPT, AGENT_TOOLS)["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    [call] = first["message"]["tool_calls"]
    assert call["function"]["name"] == "Bash" and json.loads(call["function"]["arguments"]) == {
        "command": "ls /tmp/x"
    }
    follow = [*ASK_GPT, first["message"], {"role": "tool", "tool_call_id": call["id"], "content": OUTPUT}]
    final = chat(gpt, follow, AGENT_TOOLS)["choices"][0]
    assert final["finish_reason"] == "stop" and final["message"]["content"] == f"The tool returned: {OUTPUT}"
    assert (
        chat(gpt, ASK_GPT, ["Read"])["choices"][0]["message"]["content"] == "Simulated answer to: List /tmp/x"
    )
    assert chat(gpt, ASK_GPT, None)["choices"][0]["message"]["content"] == "Simulated answer to: List /tmp/x"


async def test_litellm_runs_the_openai_loop(gpt: OpenAISim, litellm) -> None:
    kwargs = {
        "model": "openai/gpt-4o",
        "api_base": gpt.base_url + "/v1",
        "api_key": "sk-x",
        "tools": [openai_tool(t) for t in AGENT_TOOLS],
        "num_retries": 0,
        "_skip_mcp_handler": True,
    }
    first = (await litellm.acompletion(messages=ASK_GPT, **kwargs)).choices[0].message
    [call] = first.tool_calls
    follow = [*ASK_GPT, first.model_dump(), {"role": "tool", "tool_call_id": call.id, "content": OUTPUT}]
    stream = await litellm.acompletion(messages=follow, stream=True, **kwargs)
    built = litellm.stream_chunk_builder([chunk async for chunk in stream])
    assert built.choices[0].message.content == f"The tool returned: {OUTPUT}"


async def test_litellm_runs_the_anthropic_loop(claude: AnthropicSim, litellm) -> None:
    kwargs = {
        "model": "anthropic/claude-sonnet-4-5",
        "api_base": claude.base_url,
        "api_key": "sk-x",
        "tools": [openai_tool(t) for t in AGENT_TOOLS],
        "num_retries": 0,
        "_skip_mcp_handler": True,
    }
    first = (await litellm.acompletion(messages=ASK_GPT, **kwargs)).choices[0].message
    [call] = first.tool_calls
    assert call.function.name == "Bash"
    follow = [*ASK_GPT, first.model_dump(), {"role": "tool", "tool_call_id": call.id, "content": OUTPUT}]
    final = await litellm.acompletion(messages=follow, **kwargs)
    assert final.choices[0].message.content == f"The tool returned: {OUTPUT}"


# -- the plan's forms -------------------------------------------------------------------


def test_the_plain_tool_call_keeps_calling_whatever_the_turn(claude: AnthropicSim) -> None:
    claude.plan = FaultPlan(tool_call=BASH)
    follow = [
        *ASK_CLAUDE,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]},
    ]
    assert messages(claude, follow, ["Bash"])["content"][0]["type"] == "tool_use"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('Bash={"command":"ls /tmp/x"}', BASH),
        ("Bash", ToolCall(name="Bash")),
        ("Read = {}", ToolCall(name="Read")),
    ],
)
def test_tool_call_parse(spec: str, expected: ToolCall) -> None:
    assert ToolCall.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [("={}", "expected NAME=JSON"), ("Bash={nope", "not JSON"), ("Bash=[1]", "must be a JSON object")],
)
def test_tool_call_parse_refuses(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ToolCall.parse(spec)


def test_plan_file_says_the_same(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "faults: ['429:retry_after=2,times=1', {kind: latency, delay_s: 0.1}]\n"
        "tool_loop:\n"
        '  - \'Bash={"command": "ls /tmp/x"}\'\n'
        "  - {name: Read, arguments: {file_path: /etc/hosts}}\n"
        "redact_thinking: true\n"
        "cache_write_1h_tokens: 7\n",
        encoding="utf-8",
    )
    plan = FaultPlan.load(path)
    assert plan.faults == [
        Fault(kind="http_error", status=429, retry_after=2, times=1),
        Fault(kind="latency", delay_s=0.1),
    ]
    assert plan.tool_loop == [BASH, ToolCall(name="Read", arguments={"file_path": "/etc/hosts"})]
    assert plan.redact_thinking and plan.cache_write_1h_tokens == 7
    path.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping"):
        FaultPlan.load(path)
