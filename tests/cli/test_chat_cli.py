"""`llmgw chat` as a user runs it: a real subprocess, a simulator, a migrated ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from llmgw.ledger.migrate import upgrade
from llmgw.sim import FaultPlan, OpenAISim
from llmgw.sim.registry import snippet_dict
from tests.support import ledger_rows


def test_chat_prints_the_answer_and_a_footer(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    with OpenAISim(api_key="sk-chat-test-key",
                   plan=FaultPlan(answer="Start with the payment retries.", prompt_tokens=12,
                                  completion_tokens=6)) as sim:
        data = snippet_dict({"openai": sim.base_url}, api_key="sk-chat-test-key")
        data["llmgw"]["ledger"] = {"url": url}
        (tmp_path / "model_list.yaml").write_text(yaml.safe_dump(data))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
        outs = []
        for extra in ([], ["--stream"]):
            proc = subprocess.run(
                [sys.executable, "-m", "llmgw.cli", "chat", "--agent", "qa-1", "--project", "shop",
                 *extra, "What should we test first?"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            outs.append(proc.stdout)
    for out in outs:
        answer, footer = out.strip().splitlines()[0], out.strip().splitlines()[-1]
        assert answer == "Start with the payment retries."
        assert "openai/sim-gpt" in footer and "12+6 tokens" in footer and "$0.000024" in footer
    rows = ledger_rows(url)
    assert [(r["agent_id"], r["project_id"], r["stream"]) for r in rows] == [
        ("qa-1", "shop", False), ("qa-1", "shop", True)]


def test_chat_without_a_ledger_names_the_fix(tmp_path: Path):
    with OpenAISim() as sim:
        data = snippet_dict({"openai": sim.base_url})
        data["llmgw"]["ledger"] = {"url": f"sqlite:///{tmp_path / 'missing.db'}"}
        (tmp_path / "model_list.yaml").write_text(yaml.safe_dump(data))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
        proc = subprocess.run([sys.executable, "-m", "llmgw.cli", "chat", "hello"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "llmgw db upgrade" in proc.stderr
