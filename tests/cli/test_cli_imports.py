"""`llmgw --help`, `usage`, `db`, `budgets` and `models` must not import LiteLLM (seconds) or the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from llmgw.ledger.migrate import upgrade

SCRIPT = textwrap.dedent("""
    import sys
    from typer.testing import CliRunner
    from llmgw.cli import app

    url = sys.argv[1]
    runner = CliRunner()
    for args in (["--help"], ["usage", "report", "--help"], ["db", "current", "--ledger-url", url],
                 ["usage", "report", "--ledger-url", url, "--by", "day", "--since", "7d"],
                 ["usage", "report", "--ledger-url", url, "--format", "json"],
                 ["budgets", "set", "--project", "p", "--daily", "5", "--ledger-url", url],
                 ["budgets", "list", "--ledger-url", url], ["budgets", "status", "--ledger-url", url],
                 ["db", "reconcile", "--older-than", "0", "--force", "--ledger-url", url],
                 ["models", "--help"], ["mcp", "--help"],
                 ["cache", "--help"], ["chat", "--help"], ["sim", "--help"], ["health", "--help"],
                 ["local", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] == "litellm" or m in ("llmgw.gateway", "llmgw.routing.router"))
    print("HEAVY:", heavy)
    assert not heavy, heavy
""")


def test_cli_does_not_import_litellm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, url], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY: []" in proc.stdout


def test_console_script_help(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("llmgw")
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout and "db" in proc.stdout
