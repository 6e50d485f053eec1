"""Codex (the pinned npm release, headless `codex exec`) through `llmgw serve`'s Responses front.

Set up as a custom model provider (tests/clients/run.py: `base_url` the gateway's /v1, an llmgw
agent key via `env_key`, `wire_api = "responses"`, no WebSocket, no retries, analytics and plugin
sync off). Its `gpt-*` model name reaches high-reasoning through `llmgw.model_aliases`. The harness
tests run the same client against the recording stand-in, so they show what Codex sends whatever
state the gateway is in (tests/fixtures/codex/ holds the full capture).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmgw.sim import FaultPlan
from llmgw.sim.faults import ToolCall
from tests.clients.recorder_openai import OpenAIRecorder
from tests.clients.run import codex_exec, codex_session_id
from tests.e2e.conftest import AGENT, PROJECT, Gateway, expected_cost_micros

KEY = "sk-llmgw-harness-0123456789"


def listed_dir(tmp_path: Path) -> tuple[Path, str]:
    """A directory holding one file whose name only `ls` can tell."""
    work = tmp_path / "work"
    work.mkdir()
    name = f"e2e-{uuid.uuid4().hex[:12]}.txt"
    (work / name).write_text("listed\n")
    return work, name


def assert_ledger(gw: Gateway, *, session_id: str, deployment: str, count: int) -> None:
    """`count` ok rows of the key's project and agent in high-reasoning, priced at the deployment's
    rates, carrying Codex's session; no reservation left open."""
    rows = gw.rows()
    assert [r["status"] for r in rows] == ["ok"] * count, rows
    for row in rows:
        assert (row["project_id"], row["agent_id"]) == (PROJECT, AGENT)
        assert (row["model_group"], row["deployment_id"]) == ("high-reasoning", deployment)
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, row
        assert row["cost_micros"] == expected_cost_micros(deployment, row["prompt_tokens"],
                                                          row["completion_tokens"]) > 0, row
        assert row.get("session_id") == session_id, f"the row's session is not Codex's: {row}"
    assert gw.open_reservations() == 0


def tool_outputs(backend: str, sim: Any, body: dict[str, Any]) -> list[str]:
    """The tool results a deployment request carries: Responses items, or Anthropic tool_result blocks."""
    if backend == "openai":
        return [str(i.get("output")) for i in body.get("input") or []
                if isinstance(i, dict) and i.get("type") == "function_call_output"]
    return sim.tool_results(body) or []


# --- the harness, against the recording stand-in -------------------------------------------------


def test_harness_plain_prompt_sends_one_responses_request(openai_recorder: OpenAIRecorder,
                                                          tmp_path: Path) -> None:
    result = codex_exec("Say hello", base_url=openai_recorder.base_url, api_key=KEY, cwd=tmp_path,
                        home=tmp_path / "home")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.final_message == "Hello from the recorder."
    # One request, nothing else: no model list, no WebSocket attempt, no 404s.
    assert [(r.method, r.path) for r in openai_recorder.requests] == [("POST", "/v1/responses")]
    (request,) = openai_recorder.requests
    assert request.headers["authorization"] == "<dropped>"
    assert request.headers["originator"] == "codex_exec"
    assert codex_session_id(request.headers["x-codex-turn-metadata"]) == result.thread_id
    assert request.headers["session-id"] == result.thread_id
    body = request.body
    assert (body["model"], body["stream"], body["store"]) == ("gpt-5.5", True, False)
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["prompt_cache_key"] == result.thread_id
    assert openai_recorder.websocket_attempts() == [] and openai_recorder.unknown() == []


def test_harness_exec_command_loop_runs_ls(openai_recorder: OpenAIRecorder, tmp_path: Path) -> None:
    work, name = listed_dir(tmp_path)
    openai_recorder.tool_command = f"ls {work}"
    result = codex_exec("List the files in this directory", base_url=openai_recorder.base_url, api_key=KEY,
                        cwd=work, home=tmp_path / "home")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert name in result.final_message
    (ran,) = result.items("command_execution")
    assert ran["exit_code"] == 0 and name in ran["aggregated_output"]
    first, second = openai_recorder.responses_requests()
    shell = next(t for t in first.body["tools"] if t.get("name") == "exec_command")
    assert shell["parameters"]["required"] == ["cmd"]
    call, output = [i for i in second.body["input"]
                    if i.get("type") in {"function_call", "function_call_output"}]
    assert json.loads(call["arguments"]) == {"cmd": f"ls {work}"}
    assert output["call_id"] == call["call_id"] and name in output["output"]
    assert openai_recorder.unknown() == []


# --- through the gateway -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_exec_command_tool_loop(start_gateway: Any, tmp_path: Path, backend: str) -> None:
    work, name = listed_dir(tmp_path)
    gw = start_gateway(backend, FaultPlan(tool_loop=[ToolCall(name="exec_command",
                                                              arguments={"cmd": f"ls {work}"})]))
    result = codex_exec("List the files in this directory", base_url=gw.base_url, api_key=gw.api_key,
                        cwd=work, home=tmp_path / "home")
    assert result.returncode == 0 and not result.errors, (result.stdout, result.stderr)
    assert name in result.final_message, result.events
    (ran,) = result.items("command_execution")
    assert name in ran["aggregated_output"]
    sim = gw.reasoning_sim
    first, second = [r for r in sim.requests if r.path.endswith(("/responses", "/messages"))]
    assert tool_outputs(backend, sim, first.json) == []
    assert any(name in r for r in tool_outputs(backend, sim, second.json)), second.json
    assert_ledger(gw, session_id=result.thread_id, deployment=f"reasoning-{backend}", count=2)


def test_budget_refusal_is_codex_own_error(start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway("openai", FaultPlan())
    gw.set_tiny_budget()
    result = codex_exec("Say hello", base_url=gw.base_url, api_key=gw.api_key, cwd=tmp_path,
                        home=tmp_path / "home")
    assert result.items("agent_message") == []
    # Codex reports the gateway's 429 as its own failed turn, in its own words.
    failed = [json.loads(e) for e in result.errors if json.loads(e)["type"] == "turn.failed"]
    assert [f["error"]["message"] for f in failed] == ["Quota exceeded. Check your plan and billing details."]
    assert [r for r in gw.openai.requests if r.path.endswith("/responses")] == []
    assert [r["status"] for r in gw.rows()] == ["refused"]
    assert gw.open_reservations() == 0
