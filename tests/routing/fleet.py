"""Fleets of deployments over the loopback simulators, for the routing tests.

A deployment is (group, id, sim, model, extra litellm_params); prices default to a fixed
pair unless given. One OpenAI simulator can stand for several deployments: faults and
counts are per model name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.sim import AnthropicSim, OpenAISim
from tests.support import ANTHROPIC_KEY, OPENAI_KEY

REPO = Path(__file__).resolve().parents[2]


def dep(group: str, dep_id: str, sim: AnthropicSim | OpenAISim, model: str,
        price: tuple[str, str] = ("0.000001", "0.000002"), **params: Any) -> dict[str, Any]:
    if isinstance(sim, AnthropicSim):
        base = {"model": f"anthropic/{model}", "api_base": sim.base_url, "api_key": ANTHROPIC_KEY}
    else:
        base = {"model": f"openai/{model}", "api_base": sim.base_url + "/v1",
                "api_key": OPENAI_KEY}
    info = {"id": dep_id, "input_cost_per_token": price[0], "output_cost_per_token": price[1]}
    return {"model_name": group, "litellm_params": {**base, **params}, "model_info": info}


def fleet_dict(deployments: list[dict[str, Any]], ledger_url: str, *,
               llmgw: dict[str, Any] | None = None, **router_settings: Any) -> dict[str, Any]:
    groups = [d["model_name"] for d in deployments]
    return {"model_list": deployments,
            "router_settings": router_settings,
            "llmgw": {"default_group": groups[0], "ledger": {"url": ledger_url},
                      "cache": {"backend": "none"}, **(llmgw or {})}}


def fleet(deployments: list[dict[str, Any]], ledger_url: str, **kw: Any) -> Config:
    return config_from_dict(fleet_dict(deployments, ledger_url, **kw))


def hops(completion: Any) -> list[tuple[str | None, str]]:
    """(deployment, status) of every attempt of a completion, in order."""
    return [(a.deployment, a.status) for a in completion.attempts]


def run_workers(config: dict[str, Any], tmp_path: Path, processes: int, *args: str,
                timeout: float = 300) -> list[list[dict[str, Any]]]:
    """`processes` gateway processes (`python -m tests.routing.worker CONFIG ARGS...`) started
    together; each one's JSON lines."""
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
    path.write_text(json.dumps(config))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.routing.worker", str(path), *args],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        outputs.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return outputs
