"""gc.freeze: start-up's heap, then the provider modules of the first answer, once each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import sim_config_dict

REPO = Path(__file__).resolve().parents[2]
# A fresh process: the freeze is once per process, and this test process froze long ago.
SCRIPT = """
import asyncio, gc, json, sys
from llmgw._litellm import set_offline_env
set_offline_env()
from llmgw.gateway import LLMGateway
counts = {"before": gc.get_freeze_count()}
async def main():
    gw = LLMGateway(sys.argv[1])
    counts["built"] = gc.get_freeze_count()
    await gw.complete("a1", "apollo", [{"role": "user", "content": "one"}])
    counts["first answer"] = gc.get_freeze_count()
    await gw.complete("a1", "apollo", [{"role": "user", "content": "two"}])
    counts["second answer"] = gc.get_freeze_count()
    second = LLMGateway(sys.argv[1])
    counts["second gateway"] = gc.get_freeze_count()
    await second.aclose()
    await gw.aclose()
asyncio.run(main())
print(json.dumps(counts))
"""


def freeze_counts(tmp_path: Path, sims, ledger_url: str, **llmgw: object) -> dict[str, int]:
    openai_sim, anthropic_sim = sims
    cfg = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, ledger_url)
    cfg["llmgw"].update(llmgw)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_the_first_gateway_freezes_startup_and_the_first_answer_once_each(
        sims, migrated_ledger_url: str, tmp_path: Path) -> None:
    counts = freeze_counts(tmp_path, sims, migrated_ledger_url, gc_freeze=True)
    assert counts["before"] == 0
    assert counts["built"] > 100_000  # LiteLLM's import: the heap a full collection walked
    assert counts["first answer"] > counts["built"]  # what the first provider call imported
    # Once per process: later answers and gateways freeze nothing more (frozen objects freed
    # by reference counting leave the count; a freeze would add every live object).
    assert counts["second gateway"] <= counts["second answer"] <= counts["first answer"]


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("setting", [{"gc_freeze": False}, {}], ids=["false", "default"])
def test_a_host_application_s_collector_is_left_alone(
        sims, migrated_ledger_url: str, tmp_path: Path, setting: dict[str, bool]) -> None:
    """A library does not tune its host's process: without `gc_freeze: true`, only llmgw's own
    entry points (serve, mcp, the CLI) freeze."""
    counts = freeze_counts(tmp_path, sims, migrated_ledger_url, **setting)
    assert set(counts.values()) == {0}
