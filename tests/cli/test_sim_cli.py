"""`llmgw sim`: a real long-running process stopped by SIGTERM, argument errors, and the
`model_list.yaml` snippet, checked by LiteLLM's Router against every simulator present."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from llmgw.cli import sim as sim_cli
from llmgw.config.loading import config_from_dict
from llmgw.sim import registry

KEY = "sk-simcli-KEY-0123456789"
STARTUP_S = 60.0  # generous: a loaded CI machine; the test ends as soon as the line appears

# The real `llmgw` app once `sim` is registered there; until then the same group added the
# same way, so both run the code under test.
SCRIPT = textwrap.dedent("""
    import sys
    from llmgw.cli import app
    if not any(g.name == "sim" for g in app.registered_groups):
        from llmgw.cli import sim
        app.add_typer(sim.app, name="sim")
    sys.argv[0] = "llmgw"
    app()
""")


def _local_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sim_cli.app, name="sim")
    app.command("noop")(lambda: None)  # a second command keeps `sim` a named group
    return app


runner = CliRunner()


class Lines:
    """A process's stdout lines, read by a thread, so waiting for one has a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()

    def _pump(self, stdout: object) -> None:
        for line in stdout:  # type: ignore[attr-defined]
            self._queue.put(line)
        self._queue.put(None)

    def until(self, marker: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout}s:\n{''.join(self.seen)}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stdout closed before {marker!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if marker in line:
                return self.seen

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines, Path]]:
    snippet = tmp_path / "sims.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "sim", "openai", "anthropic", "--snippet-file",
         str(snippet), "--fault-for", "openai=503:times=1", "--api-key", KEY],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, Lines(proc), snippet
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_sim_serves_until_sigterm_then_exits_cleanly(sim_process) -> None:
    proc, lines, snippet_file = sim_process
    out = "".join(lines.until(sim_cli.READY_MARKER, STARTUP_S))

    bases = dict(re.findall(r"^\s*(openai|anthropic)\s+(http://127\.0\.0\.1:\d+)\s", out, re.M))
    assert set(bases) == {"openai", "anthropic"}, out
    config = config_from_dict(yaml.safe_load(snippet_file.read_text(encoding="utf-8")))
    params = {d.id: d.litellm_params for d in config.model_list}
    assert params["sim-openai"].api_base == bases["openai"] + "/v1"
    assert params["sim-anthropic"].api_base == bases["anthropic"]
    assert params["sim-openai"].api_key == params["sim-anthropic"].api_key == KEY

    chat = {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as client:
        auth = {"Authorization": f"Bearer {KEY}"}
        first = client.post(f"{bases['openai']}/v1/chat/completions", json=chat, headers=auth)
        second = client.post(f"{bases['openai']}/v1/chat/completions", json=chat, headers=auth)
        claude = client.post(f"{bases['anthropic']}/v1/messages",
                             json={**chat, "model": "claude-sim", "max_tokens": 16},
                             headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
        refused = client.post(f"{bases['anthropic']}/v1/messages",
                              json={**chat, "model": "claude-sim", "max_tokens": 16},
                              headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"})
    assert first.status_code == 503  # --fault-for openai=503:times=1
    assert second.status_code == 200 and second.json()["choices"][0]["message"]["content"]
    assert claude.status_code == 200 and claude.json()["content"][0]["text"]
    assert refused.status_code == 401  # --api-key is enforced

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, lines.rest(5)
    assert "Stopped 2 simulators." in lines.rest(5)
    for base in bases.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(base, timeout=5)


@pytest.mark.parametrize("args, message", [
    (["bogus"], "unknown simulator 'bogus'"),
    (["openai", "--fault", "nope"], "unknown fault kind 'nope'"),
    (["openai", "--fault", "700"], "status"),
    (["openai", "--fault", "429:retry_after=soon"], "retry_after"),
    (["openai", "--fault-for", "anthropic=503"], "'anthropic' is not one of the simulators"),
    (["openai", "--fault-for", "openai"], "expected NAME=VALUE"),
    (["openai", "--port", "openai=70000"], "'70000' is not a valid value"),
    (["openai", "--port", "openai=http"], "'http' is not a valid value"),
    (["openai", "--tool-call", "Bash={nope"], "the arguments of 'Bash' are not JSON"),
    (["openai", "--tool-call", "Bash=[1]"], "must be a JSON object"),
    (["openai", "--tool-call", "={}"], "expected NAME=JSON"),
    (["openai", "--plan", "no-such-plan.yaml"], "cannot read it"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(_local_app(), ["sim", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0, result.output  # one line, no traceback


@pytest.mark.parametrize("text, message", [
    ("answer: [1, 2\n", "is not valid YAML: while parsing"),
    ("tool_loops: []\n", "tool_loops: Extra inputs are not permitted"),
    ("faults: ['nope']\n", "unknown fault kind 'nope'"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_plan_file_exits_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text, encoding="utf-8")
    result = runner.invoke(_local_app(), ["sim", "openai", "--plan", str(plan)])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(plan) in result.output
    assert result.output.strip().count("\n") == 0, result.output


def test_tool_loop_and_plan_file_from_the_command_line(tmp_path: Path) -> None:
    """What lets a real agent run a tool loop offline: no Python, one command."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("faults: ['503:times=1']\ncache_write_1h_tokens: 2\n"
                    "tool_loop: ['Read={\"file_path\": \"/etc/hosts\"}']\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "sim", "anthropic", "openai", "--plan", str(plan),
         "--tool-call", 'Bash={"command":"ls /tmp/x"}', "--redact-thinking"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = Lines(proc)
    try:
        out = "".join(lines.until(sim_cli.READY_MARKER, STARTUP_S))
        bases = dict(re.findall(r"^\s*(openai|anthropic)\s+(http://127\.0\.0\.1:\d+)\s", out, re.M))
        assert "503, tool:Bash, tool:Read" in out
        tools = [{"name": n, "input_schema": {"type": "object"}} for n in ("Read", "Bash")]
        ask = [{"role": "user", "content": "list /tmp/x"}]
        body = {"model": "claude-sonnet-4-5", "max_tokens": 2048, "tools": tools, "messages": ask,
                "thinking": {"type": "enabled", "budget_tokens": 1024}}
        headers = {"anthropic-version": "2023-06-01"}
        with httpx.Client(timeout=30) as client:
            url = f"{bases['anthropic']}/v1/messages"
            assert client.post(url, json=body, headers=headers).status_code == 503  # the file's fault
            first = client.post(url, json=body, headers=headers).json()
            redacted, use = first["content"]
            assert redacted["type"] == "redacted_thinking"  # --redact-thinking
            assert (use["name"], use["input"]) == ("Bash", {"command": "ls /tmp/x"})  # the CLI's first
            assert first["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 2
            result = {"type": "tool_result", "tool_use_id": use["id"], "content": "x.txt"}
            follow = [*ask, {"role": "assistant", "content": first["content"]},
                      {"role": "user", "content": [result]}]
            final = client.post(url, json={**body, "messages": follow}, headers=headers).json()
            assert final["content"][-1]["text"] == "The tool returned: x.txt"
            plain = client.post(url, json={k: v for k, v in body.items() if k != "tools"},
                                headers=headers).json()
            assert plain["content"][-1]["type"] == "text"

            chat = {"model": "gpt-4o", "messages": ask, "tools": [
                {"type": "function", "function": {"name": "Read", "parameters": {}}}]}
            assert client.post(f"{bases['openai']}/v1/chat/completions", json=chat).status_code == 503
            choice = client.post(f"{bases['openai']}/v1/chat/completions", json=chat).json()["choices"][0]
            assert choice["message"]["tool_calls"][0]["function"]["name"] == "Read"  # the file's entry
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, lines.rest(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_codex_style_tool_loop_over_the_responses_api(tmp_path: Path) -> None:
    """`llmgw sim openai --tool-call exec_command=...`: a Codex-shaped Responses request (the
    function nested in a namespace) gets the call, the continuation holding its output the text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "sim", "openai", "--tool-call", 'exec_command={"cmd":"ls /tmp/x"}',
         "--reasoning-tokens", "9"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = Lines(proc)
    try:
        out = "".join(lines.until(sim_cli.READY_MARKER, STARTUP_S))
        base = re.findall(r"^\s*openai\s+(http://127\.0\.0\.1:\d+)\s", out, re.M)[0]
        assert "tool:exec_command" in out
        function = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
        tools = [{"type": "web_search"},
                 {"type": "namespace", "name": "shell", "description": "Shell", "tools": [function]}]
        body = {"model": "gpt-5-codex", "instructions": "You are Codex.", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list /tmp/x"}]}],
            "tools": tools, "reasoning": {"effort": "medium", "summary": "auto"}, "store": True,
            "stream": False}
        with httpx.Client(base_url=f"{base}/v1", timeout=30) as client:
            first = client.post("/responses", json=body).json()
            reasoning, call = first["output"]
            assert reasoning["type"] == "reasoning" and first["usage"]["output_tokens_details"] == {
                "reasoning_tokens": 9}
            assert (call["name"], call["namespace"], json.loads(call["arguments"])) == (
                "exec_command", "shell", {"cmd": "ls /tmp/x"})
            output = {"type": "function_call_output", "call_id": call["call_id"], "output": "x.txt"}
            final = client.post("/responses", json={**body, "previous_response_id": first["id"],
                                                    "input": [output]}).json()
            assert final["output"][-1]["content"][0]["text"] == "The tool returned: x.txt"
            assert client.get(f"/responses/{final['id']}").json() == final
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, lines.rest(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_busy_port_exits_1_and_starts_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(_local_app(), ["sim", "anthropic", "openai", "--port",
                                              f"openai={port}"])
    assert result.exit_code == 1, result.output
    assert f"Cannot start the openai simulator on port {port}" in result.output
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_snippet_for_every_provider_is_a_valid_config() -> None:
    running = {name: f"http://127.0.0.1:{4000 + i}" for i, name in enumerate(registry.PROVIDERS)}
    text = registry.snippet(running, api_key=None)
    config = config_from_dict(yaml.safe_load(text))

    assert text.startswith("# model_list.yaml")
    assert config.llmgw.default_group == "sim-openai"
    assert [d.id for d in config.model_list] == [f"sim-{n}" for n in registry.PROVIDERS]
    for dep in config.model_list:
        provider = registry.get(dep.id.removeprefix("sim-"))
        assert dep.litellm_params.model == provider.model
        assert dep.litellm_params.api_base == provider.api_base(running[provider.name])
        assert (dep.litellm_params.api_key is not None) == provider.needs_api_key
        assert (dep.input_price == 0) == provider.local
    with pytest.raises(ValueError):
        registry.snippet({})
    with pytest.raises(KeyError, match="unknown simulator"):
        registry.get("mistral")


@pytest.mark.parametrize("name", list(registry.PROVIDERS))
async def test_snippet_deployment_answers_through_litellm(name: str) -> None:
    """The registry's model, api_base and key rules, checked by LiteLLM's real provider code."""
    from llmgw.redact import Redactor
    from llmgw.routing.router import build_router

    provider = registry.get(name)
    with provider.load()(api_key=KEY if provider.needs_api_key else None) as server:
        config = config_from_dict(yaml.safe_load(
            registry.snippet({name: server.base_url}, api_key=KEY)))
        router = build_router(config, Redactor(config.secret_values()))
        response = await router.acompletion(
            model=provider.group, messages=[{"role": "user", "content": "hello there"}],
            max_tokens=16)
    assert response.choices[0].message.content
    assert response._hidden_params["model_id"] == provider.group
    assert len(server.responses) == 1 and server.responses[0].status == 200
