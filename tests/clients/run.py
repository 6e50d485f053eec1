"""Run the real clients that `make clients` installs into .cache/clients: Claude Code and Codex
headless, and the TypeScript SDK scripts beside this file (Anthropic, OpenAI, Vercel AI SDK).

Claude Code is set up the way its own LLM-gateway docs set up a gateway: `ANTHROPIC_BASE_URL`,
an ordinary key in `ANTHROPIC_API_KEY` (sent as `x-api-key`), and
`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (its docs: the same as `DISABLE_AUTOUPDATER`,
`DISABLE_BUG_COMMAND`, `DISABLE_ERROR_REPORTING` and `DISABLE_TELEMETRY` together). Without it,
2.1.332 sends `HEAD /api/hello` to the base URL and looks up api.anthropic.com for telemetry,
whatever `DISABLE_TELEMETRY` says. Nothing else: the environment is built from scratch (the
caller's `ANTHROPIC_*` or `CLAUDE*` variables never leak in) and HOME is a fresh directory,
which is all `claude -p` needs (it writes its own ~/.claude.json; an API key needs no approval
there in print mode).

Codex (`codex exec`) is set up as a custom model provider in a fresh CODEX_HOME's config.toml
(`codex_config`): `base_url` the gateway's /v1, the key from `LLMGW_API_KEY` (`env_key`, sent as
`Authorization: Bearer`), `wire_api = "responses"`, no WebSocket, no retries. Without
`analytics.enabled = false` 0.171.0 looks up ab.chatgpt.com; without `features.plugins` and
`features.remote_plugin` off it syncs plugins from github.com, api.github.com and chatgpt.com
(tests/fixtures/codex/summary.json has the evidence).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLIENTS_SRC = Path(__file__).resolve().parent
CLIENTS_DIR = REPO / ".cache" / "clients"
CLAUDE = CLIENTS_DIR / "node_modules" / ".bin" / "claude"
CODEX = CLIENTS_DIR / "node_modules" / ".bin" / "codex"
STAMP = CLIENTS_DIR / ".lock-sha256"

# Claude Code's switch for "no traffic but the model's": no telemetry, error reports, update checks.
QUIET_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
# `--dangerously-skip-permissions` and `--permission-mode bypassPermissions` refuse to run as root;
# naming the tool is enough for -p to run it without asking, as root or not.
BASH_ALLOWED = ("--allowedTools", "Bash")


class ClientsMissing(RuntimeError):
    """The pinned clients are not installed (or not the lockfile's versions)."""


def clients_problem() -> str | None:
    """Why the clients cannot run, as what to do next; None when they are installed as pinned."""
    lock = hashlib.sha256((CLIENTS_SRC / "package-lock.json").read_bytes()).hexdigest()
    if not CLAUDE.exists() or not CODEX.exists():
        return f"the test clients are not installed in {CLIENTS_DIR}: run `make clients`"
    if not STAMP.exists() or STAMP.read_text().strip() != lock:
        return (f"the test clients in {CLIENTS_DIR} are not tests/clients/package-lock.json's versions: "
                "run `make clients`")
    if shutil.which("node") is None:
        return "node is not on PATH: install Node.js 20+ (`apt-get install nodejs npm`), then `make clients`"
    return None


def require_clients() -> None:
    problem = clients_problem()
    if problem is not None:
        raise ClientsMissing(problem)


@dataclass
class ClaudeResult:
    returncode: int
    stdout: str
    stderr: str
    home: Path

    @property
    def json(self) -> dict[str, Any]:
        """`--output-format json`'s result object (`result`, `session_id`, `usage`, `is_error`...)."""
        try:
            data = json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"claude printed no JSON (exit {self.returncode}): {self.stdout!r} "
                                 f"stderr: {self.stderr!r}") from exc
        assert isinstance(data, dict), data
        return data


def claude_env(*, base_url: str, api_key: str, home: Path,
               env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment Claude Code runs with: a gateway, a key, nonessential traffic off."""
    # CLAUDE_CODE_TMPDIR: its per-run scratch (task files, probes) stays in HOME, not /tmp/claude-<uid>.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "CLAUDE_CODE_TMPDIR": str(home / "tmp"),
           "SHELL": shutil.which("bash") or "/bin/sh", "ANTHROPIC_BASE_URL": base_url,
           "ANTHROPIC_API_KEY": api_key, **QUIET_ENV}
    env.update(env_extra or {})
    return env


def claude_code(prompt: str, *, base_url: str, api_key: str, cwd: Path, args: tuple[str, ...] = (),
                env_extra: dict[str, str] | None = None, home: Path | None = None,
                timeout: float = 180.0) -> ClaudeResult:
    """`claude -p PROMPT --output-format json [args]` in `cwd`, HOME a fresh temp dir unless given."""
    require_clients()
    home = home or Path(tempfile.mkdtemp(prefix="claude-home-"))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(CLAUDE), "-p", prompt, "--output-format", "json", *args],
                          env=claude_env(base_url=base_url, api_key=api_key, home=home, env_extra=env_extra),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return ClaudeResult(proc.returncode, proc.stdout, proc.stderr, home)


def node_script(name: str, env: dict[str, str], timeout: float = 120.0) -> dict[str, Any]:
    """Run tests/clients/NAME.mjs with node and return the one JSON object it prints.

    The script is copied into .cache/clients first, so its bare `@anthropic-ai/sdk` import resolves
    to the pinned install (ES modules resolve from the importing file, not NODE_PATH)."""
    require_clients()
    scripts = CLIENTS_DIR / "scripts"
    scripts.mkdir(exist_ok=True)
    for source in CLIENTS_SRC.glob("*.mjs"):  # the script and the module it shares with the others
        shutil.copyfile(source, scripts / source.name)
    target = scripts / f"{name}.mjs"
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run([node, str(target)], env={"PATH": os.environ.get("PATH", ""), **env},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{name}.mjs exited {proc.returncode}: stdout {proc.stdout!r} "
                             f"stderr {proc.stderr!r}")
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise AssertionError(f"{name}.mjs printed no JSON object: {proc.stdout!r} {proc.stderr!r}") from exc
    assert isinstance(data, dict), data
    return data


# --- Codex ---------------------------------------------------------------------------------------

CODEX_KEY_ENV = "LLMGW_API_KEY"
# `codex exec` flags: no git repo needed, events as JSONL on stdout, nothing persisted. The shell
# tool runs without asking (exec never prompts) in Codex's read-only sandbox: `ls` needs no more.
CODEX_EXEC_ARGS = ("--skip-git-repo-check", "--json", "--ephemeral", "--strict-config",
                   "--sandbox", "read-only")


CODEX_QUIET = """check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
"""


def codex_config(base_url: str, *, model: str = "gpt-5.5", quiet: bool = True) -> str:
    """config.toml for a CODEX_HOME: the gateway as the only provider, nothing else on the network
    (`quiet=False` leaves out the switches that keep it so, for the capture's evidence).

    `--strict-config` (in CODEX_EXEC_ARGS) makes Codex refuse any key here it does not know."""
    return f'''model = "{model}"
model_provider = "llmgw"
{CODEX_QUIET if quiet else ""}
[model_providers.llmgw]
name = "llmgw"
base_url = "{base_url}/v1"
env_key = "{CODEX_KEY_ENV}"
wire_api = "responses"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
'''


@dataclass
class CodexResult:
    returncode: int
    stdout: str
    stderr: str
    home: Path

    @property
    def events(self) -> list[dict[str, Any]]:
        """`--json`'s events: thread.started, turn.started, item.*, turn.completed or turn.failed."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def thread_id(self) -> str:
        (started,) = [e for e in self.events if e["type"] == "thread.started"]
        return str(started["thread_id"])

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e["type"] == "item.completed" and e["item"]["type"] == kind]

    @property
    def final_message(self) -> str:
        messages = self.items("agent_message")
        if not messages:
            raise AssertionError(f"codex gave no answer (exit {self.returncode}): {self.stdout!r} "
                                 f"{self.stderr!r}")
        return str(messages[-1]["text"])

    @property
    def errors(self) -> list[str]:
        """What Codex reported as failures (`error` events, `turn.failed`), as it printed them."""
        return [json.dumps(e) for e in self.events if e["type"] in {"error", "turn.failed"}]


def codex_env(*, api_key: str, home: Path) -> dict[str, str]:
    """The whole environment Codex runs with: HOME and CODEX_HOME fresh, the key, nothing inherited."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "CODEX_HOME": str(home / ".codex"), "SHELL": shutil.which("bash") or "/bin/sh",
            CODEX_KEY_ENV: api_key}


def codex_home(base_url: str, home: Path | None = None, *, model: str = "gpt-5.5",
               quiet: bool = True) -> Path:
    home = home or Path(tempfile.mkdtemp(prefix="codex-home-"))
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    (home / ".codex" / "config.toml").write_text(codex_config(base_url, model=model, quiet=quiet))
    return home


def codex_exec(prompt: str, *, base_url: str, api_key: str, cwd: Path, home: Path | None = None,
               model: str = "gpt-5.5", args: tuple[str, ...] = (), timeout: float = 180.0,
               wrap: tuple[str, ...] = (), quiet: bool = True) -> CodexResult:
    """`codex exec --json PROMPT` in `cwd` against `base_url` (the gateway, not its /v1); `wrap`
    prefixes the command (strace)."""
    require_clients()
    home = codex_home(base_url, home, model=model, quiet=quiet)
    proc = subprocess.run([*wrap, str(CODEX), "exec", *CODEX_EXEC_ARGS, *args, prompt],
                          env=codex_env(api_key=api_key, home=home), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return CodexResult(proc.returncode, proc.stdout, proc.stderr, home)


def codex_session_id(turn_metadata: str) -> str:
    """The session id in Codex's `x-codex-turn-metadata` header (a JSON object)."""
    return str(json.loads(turn_metadata)["session_id"])


def openai_env(*, base_url: str, api_key: str, **extra: str) -> dict[str, str]:
    """The environment of the OpenAI-side scripts: the gateway's /v1 and a key, as the SDKs read them."""
    return {"OPENAI_BASE_URL": f"{base_url}/v1", "OPENAI_API_KEY": api_key, **extra}
