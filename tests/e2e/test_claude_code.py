"""Claude Code (the pinned npm release, headless `claude -p`) through `llmgw serve`.

Set up as its LLM-gateway docs say: ANTHROPIC_BASE_URL, an llmgw agent key as ANTHROPIC_API_KEY,
nonessential traffic off (tests/clients/run.py). Its default model names reach groups through
`llmgw.model_aliases`. The harness tests run the same client against the recording stand-in, so
they show what Claude Code sends whatever state the gateway is in.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.clients.recorder import Recorder
from tests.clients.run import BASH_ALLOWED, claude_code
from tests.e2e.conftest import AGENT, PROJECT, Gateway, expected_cost_micros

ANSWER = "Hello from the gateway."


def listed_dir(tmp_path: Path) -> tuple[Path, str]:
    """A directory holding one file whose name only `ls` can tell."""
    work = tmp_path / "work"
    work.mkdir()
    name = f"e2e-{uuid.uuid4().hex[:12]}.txt"
    (work / name).write_text("listed\n")
    return work, name


def bash_loop(work: Path) -> FaultPlan:
    return FaultPlan(tool_loop=[ToolCall(name="Bash", arguments={"command": f"ls {work}",
                                                                  "description": "list"})])


def assert_ledger(gw: Gateway, *, session_id: str, group: str, deployment: str, count: int) -> None:
    """`count` ok rows of the key's project and agent in `group`, priced at the deployment's rates,
    carrying Claude Code's session; no reservation left open."""
    rows = gw.rows()
    assert [r["status"] for r in rows] == ["ok"] * count, rows
    for row in rows:
        assert (row["project_id"], row["agent_id"]) == (PROJECT, AGENT)
        assert (row["model_group"], row["deployment_id"]) == (group, deployment)
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, row
        assert row["cost_micros"] == expected_cost_micros(deployment, row["prompt_tokens"],
                                                          row["completion_tokens"]) > 0, row
        assert row.get("session_id") == session_id, f"the row's session is not Claude Code's: {row}"
    assert gw.open_reservations() == 0


# --- the harness, against the recording stand-in -------------------------------------------------


def test_harness_plain_prompt_sends_one_messages_request(recorder: Recorder, tmp_path: Path) -> None:
    result = claude_code("Say hello", base_url=recorder.base_url, api_key="sk-ant-harness-0123456789",
                         cwd=tmp_path, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    out = result.json
    assert (out["is_error"], out["result"]) == (False, "Hello from the recorder.")
    # One request, nothing else: no HEAD /api/hello preflight, no telemetry, no 404s.
    assert [(r.method, r.path, r.query) for r in recorder.requests] == [("POST", "/v1/messages",
                                                                        {"beta": "true"})]
    request = recorder.requests[0]
    assert request.headers["x-api-key"] == "<dropped>" and "authorization" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "claude-code-20250219" in request.headers["anthropic-beta"].split(",")
    assert request.body["model"].startswith("claude-") and request.body["stream"] is True
    user = json.loads(request.body["metadata"]["user_id"])
    assert user["session_id"] == out["session_id"] == request.headers["x-claude-code-session-id"]


def test_harness_bash_loop_runs_ls(recorder: Recorder, tmp_path: Path) -> None:
    work, name = listed_dir(tmp_path)
    recorder.tool_command = f"ls {work}"
    result = claude_code("List this directory with Bash", base_url=recorder.base_url,
                         api_key="sk-ant-harness-0123456789", cwd=work, args=BASH_ALLOWED,
                         home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert name in result.json["result"]
    first, second = recorder.messages_requests()
    assert any(t["name"] == "Bash" for t in first.body["tools"])
    assistant, tool_turn = second.body["messages"][-2:]
    # The assistant turn goes back unchanged: the thinking block with its signature, then the call.
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][0]["signature"]
    (tool_result,) = tool_turn["content"]
    assert tool_result["type"] == "tool_result"
    assert tool_result["tool_use_id"] == assistant["content"][1]["id"]
    assert name in tool_result["content"] and tool_result["is_error"] is False
    assert recorder.unknown() == []


# --- through the gateway -------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "group", "deployment", "sim_model"), [
    pytest.param((), "high-reasoning", "reasoning-anthropic", "claude-opus-5-5", id="default-model"),
    pytest.param(("--model", "haiku"), "fast-response", "fast-anthropic", "claude-haiku-4-5", id="haiku"),
])
def test_plain_prompt_under_claude_code_model_names(start_gateway: Any, tmp_path: Path, args: tuple[str, ...],
                                                    group: str, deployment: str, sim_model: str) -> None:
    gw = start_gateway("anthropic", FaultPlan(answer=ANSWER))
    result = claude_code("Say hello", base_url=gw.base_url, api_key=gw.api_key, cwd=tmp_path, args=args,
                         home=tmp_path / "home")
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.json
    assert (out["is_error"], out["result"]) == (False, ANSWER), out
    (sent,) = [r for r in gw.anthropic.requests if r.path == "/v1/messages"]
    assert sent.model == sim_model
    # Claude Code's betas reach the Anthropic deployment (the native Messages path).
    assert "claude-code-20250219" in sent.headers.get("anthropic-beta", "").split(",")
    assert_ledger(gw, session_id=out["session_id"], group=group, deployment=deployment, count=1)


@pytest.mark.parametrize("backend", ["anthropic", "openai"])
def test_bash_tool_loop_with_thinking(start_gateway: Any, tmp_path: Path, backend: str) -> None:
    work, name = listed_dir(tmp_path)
    gw = start_gateway(backend, bash_loop(work))
    result = claude_code("List this directory with Bash", base_url=gw.base_url, api_key=gw.api_key,
                         cwd=work, args=BASH_ALLOWED, home=tmp_path / "home")
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.json
    assert out["is_error"] is False and name in out["result"], out
    sim = gw.reasoning_sim
    first, second = [r for r in sim.requests if r.path.endswith(("/messages", "/chat/completions"))]
    assert sim.tool_results(first.json) is None
    results = sim.tool_results(second.json)
    assert results is not None and any(name in r for r in results), second.json
    if backend == "anthropic":
        # Claude Code asks for thinking; the signed block comes back on the next turn, unchanged (the
        # simulator refuses a turn whose signature it did not make).
        assert first.json["thinking"]["type"] in {"adaptive", "enabled"}
        assistant = second.json["messages"][-2]
        assert assistant["content"][0]["type"] == "thinking" and assistant["content"][0]["signature"]
        assert all(resp.fault != "invalid_thinking" for resp in sim.responses)
    assert_ledger(gw, session_id=out["session_id"], group="high-reasoning",
                  deployment=f"reasoning-{backend}", count=2)
