"""Capture what Codex really sends: `python -m tests.clients.capture_codex` (after `make clients`).

Runs the pinned Codex (`codex exec`) against the recording Responses server
(tests/clients/recorder_openai.py) and writes tests/fixtures/codex/: a plain prompt, the
exec_command tool loop, a start-up without the quiet switches, and summary.json with the facts a
gateway relies on. Where strace is installed, each run's DNS look-ups and non-loopback connects are
recorded too (the evidence that the setup stays on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.clients import run
from tests.clients.capture import _dns_names
from tests.clients.recorder import SECRET_HEADERS
from tests.clients.recorder_openai import OpenAIRecorder

FIXTURES = run.REPO / "tests" / "fixtures" / "codex"
KEY = "sk-llmgw-recorder-0123456789abcdefghijklmnop"
PROMPT = "Say hello"
TOOL_PROMPT = "List the files in this directory"


def codex_version() -> str:
    out = subprocess.run([str(run.CODEX), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def _outside_connects(trace: str) -> list[str]:
    """connect() targets off loopback, DNS (port 53) aside: look-ups are listed by name instead."""
    found = re.findall(r'connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), '
                       r'(?:sin_addr=inet_addr|inet_pton\(AF_INET6, )\("([^"]+)"', trace)
    return sorted({f"{addr}:{port}" for port, addr in found
                   if not addr.startswith("127.") and addr != "::1" and port != "53"})


def capture(name: str, *, tool: bool = False, prompt: str = PROMPT, quiet: bool = True) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="codex-work-"))
    (work / "alpha-file.txt").write_text("a\n")
    (work / "beta-notes.md").write_text("b\n")
    trace_file = work.parent / f"{work.name}.strace"
    strace = shutil.which("strace")
    wrap = (strace, "-f", "-qq", "-s", "256", "-e", "trace=network", "-o", str(trace_file)) if strace else ()
    with OpenAIRecorder(tool_command=f"ls {work}" if tool else None) as recorder:
        result = run.codex_exec(prompt, base_url=recorder.base_url, api_key=KEY, cwd=work, wrap=wrap,
                                quiet=quiet)
        requests = [r.as_json() for r in recorder.requests]
        config = (result.home / ".codex" / "config.toml").read_text().replace(recorder.base_url, "<base_url>")
    trace = trace_file.read_text() if strace else None
    sample = {"codex_version": codex_version(), "prompt": prompt,
              "args": ["exec", *run.CODEX_EXEC_ARGS, "<prompt>"], "config_toml": config,
              "env": sorted(run.codex_env(api_key=KEY, home=result.home)),
              "exit_code": result.returncode, "stderr": result.stderr, "events": result.events,
              "network": None if trace is None else {"dns_lookups": _dns_names(trace),
                                                     "non_loopback_connects": _outside_connects(trace)},
              "requests": requests}
    (FIXTURES / f"{name}.json").write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n")
    return sample


def summarize(samples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def responses(sample: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in sample["requests"] if (r["method"], r["path"]) == ("POST", "/v1/responses")]

    every = [r for s in samples.values() for r in responses(s)]
    loop = responses(samples["exec_command_tool_loop"])
    first = loop[0]["body"]
    shell = next(t for t in first["tools"] if t.get("name") == "exec_command")
    metadata = json.loads(every[0]["headers"]["x-codex-turn-metadata"])
    return {
        "codex_version": samples["plain_prompt"]["codex_version"],
        "requests_per_run": {name: [f"{r['method']} {r['path']}" for r in s["requests"]]
                             for name, s in samples.items()},
        "network": {name: s["network"] for name, s in samples.items()},
        "quiet_switches": run.CODEX_QUIET,
        "models": sorted({r["body"]["model"] for r in every}),
        "auth_header": sorted({h for r in every for h in r["headers"] if h in SECRET_HEADERS}),
        "headers": sorted({h for r in every for h in r["headers"]}),
        "user_agent": sorted({r["headers"].get("user-agent", "") for r in every}),
        "originator": sorted({r["headers"].get("originator", "") for r in every}),
        "session_headers": {h: every[0]["headers"].get(h)
                            for h in ("session-id", "thread-id", "x-client-request-id", "x-codex-window-id")},
        "x_codex_turn_metadata_example": metadata,
        "session_id_is_thread_id": all(
            json.loads(r["headers"]["x-codex-turn-metadata"])["session_id"] == r["headers"]["session-id"]
            for r in every),
        "top_level_body_fields": sorted({k for r in every for k in r["body"]}),
        "tool_types": sorted({f"{t.get('type')}:{t.get('name', '')}" for t in first["tools"]}),
        "exec_command_arguments": sorted(shell["parameters"]["properties"]),
        "exec_command_required": shell["parameters"].get("required"),
        "include": first.get("include"), "reasoning": first.get("reasoning"), "store": first.get("store"),
        "stream": first.get("stream"), "text": first.get("text"), "tool_choice": first.get("tool_choice"),
        "parallel_tool_calls": first.get("parallel_tool_calls"),
        "prompt_cache_key_is_session": all(r["body"].get("prompt_cache_key") == r["headers"].get("session-id")
                                           for r in every),
        "client_metadata": first.get("client_metadata"),
        "instructions_present": "instructions" in first,
        "input_item_types": [[i.get("type") for i in r["body"]["input"]] for r in loop],
        "input_roles": [[i.get("role") for i in r["body"]["input"] if i.get("type") == "message"]
                        for r in loop],
        "function_call_sent_back": _items(loop[-1], "function_call"),
        "function_call_output": _items(loop[-1], "function_call_output"),
        "final_answer": [e["item"]["text"] for e in samples["exec_command_tool_loop"]["events"]
                         if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"],
    }


def _items(request: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in request["body"]["input"] if i.get("type") == kind]


def main() -> None:
    run.require_clients()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    samples = {
        "plain_prompt": capture("plain_prompt"),
        "exec_command_tool_loop": capture("exec_command_tool_loop", tool=True, prompt=TOOL_PROMPT),
        "startup_without_quiet_switches": capture("startup_without_quiet_switches", quiet=False),
    }
    summary = json.dumps(summarize(samples), indent=1, ensure_ascii=False)
    (FIXTURES / "summary.json").write_text(summary + "\n")
    print(json.dumps({name: s["exit_code"] for name, s in samples.items()}))


if __name__ == "__main__":
    main()
