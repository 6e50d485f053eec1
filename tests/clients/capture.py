"""Capture what Claude Code really sends: `python -m tests.clients.capture` (after `make clients`).

Runs the pinned Claude Code headless against the recording server (tests/clients/recorder.py) and
writes tests/fixtures/claude_code/: a plain prompt, the Bash tool loop, a start-up without the
nonessential-traffic switch, and summary.json with the facts a gateway relies on. Where strace is
installed, each run's DNS look-ups and non-loopback connects are recorded too (the evidence that
the setup stays on 127.0.0.1).
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
from tests.clients.recorder import SECRET_HEADERS, Recorder

FIXTURES = run.REPO / "tests" / "fixtures" / "claude_code"
KEY = "sk-ant-recorder-0123456789abcdefghijklmnop"
PROMPT = "Say hello"
TOOL_PROMPT = "List the files in this directory with the Bash tool"


def claude_version() -> str:
    out = subprocess.run([str(run.CLAUDE), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def _dns_names(trace: str) -> list[str]:
    """Query names in the DNS packets an strace of the network calls shows."""
    names = set()
    for payload in re.findall(r'iov_base="((?:\\.|[^"\\])*)"', trace):
        packet = bytes(payload, "latin1").decode("unicode_escape").encode("latin1")[12:]
        labels, i = [], 0
        while i < len(packet) and packet[i] != 0 and i + 1 + packet[i] <= len(packet):
            labels.append(packet[i + 1:i + 1 + packet[i]].decode("ascii", "replace"))
            i += packet[i] + 1
        if labels:
            names.add(".".join(labels))
    return sorted(names)


def _outside_connects(trace: str) -> list[str]:
    address = r'sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr|inet_pton\(AF_INET6, )\("([^"]+)"'
    found = re.findall(address, trace)
    return sorted({f"{addr}:{port}" for port, addr in found
                   if not addr.startswith("127.") and addr != "::1" and port != "53"})


def capture(name: str, *, env_extra: dict[str, str] | None = None, tool: bool = False,
            prompt: str = PROMPT) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="claude-work-"))
    (work / "alpha-file.txt").write_text("a\n")
    (work / "beta-notes.md").write_text("b\n")
    args = run.BASH_ALLOWED if tool else ()
    with Recorder(tool_command=f"ls {work}" if tool else None) as recorder:
        home = Path(tempfile.mkdtemp(prefix="claude-home-"))
        (home / "tmp").mkdir()
        env = run.claude_env(base_url=recorder.base_url, api_key=KEY, home=home, env_extra=env_extra)
        env = {k: v for k, v in env.items() if v != ""}  # an empty value in env_extra unsets
        cmd = [str(run.CLAUDE), "-p", prompt, "--output-format", "json", *args]
        trace_file = work.parent / f"{work.name}.strace"
        strace = shutil.which("strace")
        if strace:
            cmd = [strace, "-f", "-qq", "-s", "256", "-e", "trace=network", "-o", str(trace_file), *cmd]
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        requests = [r.as_json() for r in recorder.requests]
    trace = trace_file.read_text() if strace else None
    result = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else proc.stdout
    sample = {"claude_code_version": claude_version(), "prompt": prompt,
              "args": ["-p", "<prompt>", "--output-format", "json", *args],
              "env": {k: ("<key>" if k == "ANTHROPIC_API_KEY" else v) for k, v in env.items()
                      if k not in {"PATH", "HOME", "CLAUDE_CODE_TMPDIR"}},
              "exit_code": proc.returncode, "stderr": proc.stderr, "result": result,
              "network": None if trace is None else {"dns_lookups": _dns_names(trace),
                                                     "non_loopback_connects": _outside_connects(trace)},
              "requests": requests}
    (FIXTURES / f"{name}.json").write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n")
    return sample


def _line(r: dict[str, Any]) -> str:
    query = "&".join(f"{k}={v}" for k, v in r["query"].items())
    return f"{r['method']} {r['path']}" + (f"?{query}" if query else "")


def summarize(samples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def messages(sample: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in sample["requests"] if r["path"] == "/v1/messages"]

    every = [r for s in samples.values() for r in messages(s)]
    loop = messages(samples["bash_tool_loop"])
    return {
        "claude_code_version": samples["plain_prompt"]["claude_code_version"],
        "requests_per_run": {name: [_line(r) for r in s["requests"]] for name, s in samples.items()},
        "network": {name: s["network"] for name, s in samples.items()},
        "models": sorted({r["body"]["model"] for r in every}),
        "anthropic_beta": sorted({b for r in every
                                  for b in r["headers"].get("anthropic-beta", "").split(",") if b}),
        "anthropic_version": sorted({r["headers"].get("anthropic-version", "") for r in every}),
        "auth_header": sorted({h for r in every for h in r["headers"] if h in SECRET_HEADERS}),
        "user_agent": sorted({r["headers"].get("user-agent", "") for r in every}),
        "session_header": "x-claude-code-session-id",
        "metadata_user_id_example": every[0]["body"]["metadata"]["user_id"],
        "top_level_body_fields": sorted({k for r in every for k in r["body"]}),
        "thinking": sorted({json.dumps(r["body"].get("thinking"), sort_keys=True) for r in every}),
        "message_roles": [[m["role"] for m in r["body"]["messages"]] for r in loop],
        "tools_offered": [t["name"] for t in loop[0]["body"]["tools"]],
        "assistant_turn_sent_back": loop[-1]["body"]["messages"][-2],
        "tool_result_turn": loop[-1]["body"]["messages"][-1],
    }


def main() -> None:
    run.require_clients()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    samples = {
        "plain_prompt": capture("plain_prompt"),
        "bash_tool_loop": capture("bash_tool_loop", tool=True, prompt=TOOL_PROMPT),
        "startup_without_quiet_switch": capture("startup_without_quiet_switch",
                                                env_extra={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""}),
        "haiku_model": capture("haiku_model", env_extra={"ANTHROPIC_MODEL": "haiku"}),
    }
    summary = json.dumps(summarize(samples), indent=1, ensure_ascii=False)
    (FIXTURES / "summary.json").write_text(summary + "\n")
    print(json.dumps({name: s["exit_code"] for name, s in samples.items()}))


if __name__ == "__main__":
    main()
