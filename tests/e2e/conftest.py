"""Real clients against `llmgw serve`'s app: a uvicorn server on a free loopback port over the
simulators, a SQLite ledger, an agent key. The clients are the pinned installs of `make clients`;
without them every test here fails (never skips) saying to run it.

The gateway's config is what a team would write for Claude Code: its model names reach groups
through `llmgw.model_aliases` (`claude-*haiku*` -> fast-response, `claude-*` -> high-reasoning).
`reasoning_backend` decides whether high-reasoning is an Anthropic or an OpenAI deployment, so the
same Claude Code run crosses the native Messages path or LiteLLM's translation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from llmgw.budgets.rules import Rule
from llmgw.config.loading import config_from_dict
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.timespec import utcnow
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from llmgw.sim import AnthropicSim, FaultPlan, OpenAISim
from tests.clients.recorder import Recorder
from tests.clients.recorder_openai import OpenAIRecorder
from tests.clients.run import clients_problem
from tests.integration.conftest import anthropic_sim, openai_sim  # noqa: F401
from tests.server.conftest import port_of, start_server, stop_server
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows

PROJECT = "e2e-proj"
AGENT = "claude-dev"

# deployment id -> (model, input $/token, output $/token)
DEPLOYMENTS = {
    "fast-anthropic": ("anthropic/claude-haiku-4-5", Decimal("0.000001"), Decimal("0.000005")),
    "reasoning-anthropic": ("anthropic/claude-opus-5-5", Decimal("0.000003"), Decimal("0.000015")),
    "reasoning-openai": ("openai/gpt-sim", Decimal("0.000002"), Decimal("0.000008")),
}
# GPT names (Codex, the OpenAI SDKs) reach high-reasoning too: `reasoning_backend` makes it an
# OpenAI or an Anthropic deployment, so one client run crosses Responses natively or translated.
ALIASES = {"claude-*haiku*": "fast-response", "claude-*": "high-reasoning", "gpt-*": "high-reasoning"}
OTHER_PROJECT = "e2e-other-proj"


@pytest.fixture(autouse=True)
def real_clients() -> None:
    """Fail, not skip: a machine without the clients has not run `make clients`."""
    problem = clients_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """The recording Anthropic stand-in (tests/clients/recorder.py), for harness tests."""
    with Recorder() as rec:
        yield rec


@pytest.fixture
def openai_recorder() -> Iterator[OpenAIRecorder]:
    """The recording Responses stand-in (tests/clients/recorder_openai.py), for harness tests."""
    with OpenAIRecorder() as rec:
        yield rec


@dataclass
class Gateway:
    base_url: str
    ledger_url: str
    api_key: str
    anthropic: AnthropicSim
    openai: OpenAISim
    reasoning_backend: str

    def rows(self) -> list[dict[str, Any]]:
        return ledger_rows(self.ledger_url)

    def open_reservations(self) -> int:
        engine = create_engine(self.ledger_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(
                    "SELECT COUNT(*) FROM reservations WHERE state = 'open'")).scalar_one())
        finally:
            engine.dispose()

    def other_project_key(self) -> str:
        """A key of another project: it must not see this project's responses."""
        engine = make_engine(self.ledger_url)
        try:
            return ApiKeyStore(engine).create(project_id=OTHER_PROJECT, agent_id="other-agent").secret
        finally:
            engine.dispose()

    def set_tiny_budget(self) -> None:
        """A daily budget of PROJECT far below one request's estimate: the next request is refused."""
        engine = make_engine(self.ledger_url)
        try:
            BudgetStore(engine).set_rule(Rule("project", PROJECT, "day", 1, 0.8), utcnow())
        finally:
            engine.dispose()

    @property
    def reasoning_sim(self) -> AnthropicSim | OpenAISim:
        return self.anthropic if self.reasoning_backend == "anthropic" else self.openai


def _deployment(group: str, dep_id: str, api_base: str, key: str) -> dict[str, Any]:
    model, inp, out = DEPLOYMENTS[dep_id]
    return {"model_name": group,
            "litellm_params": {"model": model, "api_base": api_base, "api_key": key},
            "model_info": {"id": dep_id, "input_cost_per_token": str(inp), "output_cost_per_token": str(out)}}


def e2e_config(anthropic_url: str, openai_url: str, ledger_url: str,
               reasoning_backend: str) -> dict[str, Any]:
    reasoning = (_deployment("high-reasoning", "reasoning-anthropic", anthropic_url, ANTHROPIC_KEY)
                 if reasoning_backend == "anthropic" else
                 _deployment("high-reasoning", "reasoning-openai", openai_url + "/v1", OPENAI_KEY))
    return {
        "model_list": [_deployment("fast-response", "fast-anthropic", anthropic_url, ANTHROPIC_KEY),
                       reasoning],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "high-reasoning", "model_aliases": dict(ALIASES),
                  "ledger": {"url": ledger_url}, "cache": {"backend": "none"}},
    }


def expected_cost_micros(dep_id: str, prompt_tokens: int, completion_tokens: int) -> int:
    _, inp, out = DEPLOYMENTS[dep_id]
    return int(((prompt_tokens * inp + completion_tokens * out) * 1_000_000).quantize(Decimal(1)))


@pytest.fixture
def start_gateway(openai_sim: OpenAISim, anthropic_sim: AnthropicSim,  # noqa: F811
                  tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """`start_gateway(reasoning_backend, plan=FaultPlan(...))`: the app serving on 127.0.0.1, the
    plan set on both simulators, a fresh SQLite ledger and an agent key of PROJECT/AGENT."""
    started: list[Any] = []

    def start(reasoning_backend: str = "anthropic", plan: FaultPlan | None = None) -> Gateway:
        for sim in (openai_sim, anthropic_sim):
            sim.set_plan(plan or FaultPlan())
            sim.reset()
        ledger_url = f"sqlite:///{tmp_path / f'ledger-{reasoning_backend}.db'}"
        upgrade(ledger_url)
        config = config_from_dict(e2e_config(anthropic_sim.base_url, openai_sim.base_url, ledger_url,
                                             reasoning_backend))
        server = start_server(create_app(config, ServerSettings(key_cache_s=0)))
        engine = make_engine(ledger_url)
        started.append((server, engine))
        key = ApiKeyStore(engine).create(project_id=PROJECT, agent_id=AGENT).secret
        return Gateway(f"http://127.0.0.1:{port_of(server)}", ledger_url, key, anthropic_sim, openai_sim,
                       reasoning_backend)

    yield start
    for server, engine in started:
        stop_server(server)
        engine.dispose()
    for sim in (openai_sim, anthropic_sim):
        sim.set_plan(FaultPlan())
        sim.reset()
