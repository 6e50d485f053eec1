"""The demo workload: agents of every type in two projects through one LLMGateway. Cloud
groups run on the wire-level simulators (unless a real API key is set), the local model is
real (llama.cpp serving Qwen2.5-Coder-0.5B): an Anthropic outage, a total cloud outage that
only the local model survives, a cache hit and a budget refusal, then the usage reports."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from llmgw.config.loading import config_from_dict, load_config
from llmgw.config.models import Config
from llmgw.demo_http import http_step
from llmgw.errors import LLMGatewayError
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.report import usage_report, usage_totals
from llmgw.ledger.report_output import print_table
from llmgw.local.fetch import MODEL_ALIAS, fetch_model
from llmgw.local.server import LocalServer
from llmgw.sim import AnthropicSim, FaultPlan, OpenAISim

DEMO_OPENAI_KEY = "sk-demo-openai-key"
DEMO_ANTHROPIC_KEY = "sk-ant-demo-key"

AGENTS = [  # (agent_id, agent_type, project, prompt)
    ("po-1", "product-owner", "checkout", "Write the user story for one-click checkout."),
    ("arch-1", "software-architect", "checkout", "Propose the service boundaries for payments."),
    ("dev-1", "software-engineer", "checkout", "Implement idempotency keys for the payment API."),
    ("qa-1", "qa-engineer", "checkout", "List edge cases for partial refunds."),
    ("ops-1", "devops-engineer", "checkout", "Draft the rollout plan with a canary stage."),
    ("pm-1", "project-manager", "search-revamp", "Summarise this week's risks for the search revamp."),
    ("arch-2", "software-architect", "search-revamp", "Compare BM25 and vector retrieval here."),
    ("dev-2", "software-engineer", "search-revamp", "Write the query parser's tokenizer."),
]


def simulated_config(cfg: Config, openai_url: str, anthropic_url: str,
                     local_api_base: str | None = None) -> Config:
    """The same groups, agent types, prices and fallbacks; cloud deployments on the
    simulators unless their API key is set in the environment, the local model's
    deployments on the running local server."""
    data: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True)
    for dep, original in zip(data["model_list"], cfg.model_list, strict=True):
        params = dep["litellm_params"]
        provider, _, model = params["model"].partition("/")
        if local_api_base and model == MODEL_ALIAS:
            params.update(api_base=local_api_base, api_key="local")
            continue
        env = original.api_key_env()
        if env and os.environ.get(env):
            continue  # a real key: the real provider
        if provider == "anthropic":
            params.update(api_base=anthropic_url, api_key=DEMO_ANTHROPIC_KEY)
        elif provider == "openai":
            params.update(api_base=openai_url + "/v1", api_key=DEMO_OPENAI_KEY)
    return config_from_dict(data, source=f"{cfg.source} (cloud simulated, local model real)")


async def _workload(gw: Any, anthropic: AnthropicSim, openai: OpenAISim, out: Console) -> None:
    phase = "normal"

    async def ask(agent_id: str, agent_type: str, project: str, prompt: str,
                  max_tokens: int = 256, show_answer: bool = False) -> None:
        if phase in ("outage", "recovered"):
            prompt = f"{prompt} ({phase})"
        try:
            c = await gw.complete(agent_id, project, [{"role": "user", "content": prompt}],
                                  agent_type=agent_type, max_tokens=max_tokens,
                                  metadata={"demo_phase": phase})
        except LLMGatewayError as exc:
            out.print(f"  {project:13} [red]{agent_id:7}[/] {type(exc).__name__}: {exc.message}",
                      highlight=False)
            return
        failed = [f"{a.deployment} ✗" for a in c.attempts if a.status == "error"]
        via = f"  [yellow]({' → '.join([*failed, f'{c.deployment} ✓'])})[/]" if failed else ""
        if c.cached:
            via = f"  [green](cache hit: saved ${c.saved_micros / 1e6:.6f})[/]"
        out.print(f"  {project:13} {agent_id:7} {agent_type:19} {c.requested_group:15} "
                  f"-> {c.deployment:22} {c.usage.prompt_tokens:4}+{c.usage.completion_tokens:<4} "
                  f"${c.cost_micros / 1e6:.6f}{via}", highlight=False)
        if show_answer:
            out.print(f"  [cyan]{c.model} answered:[/] {c.content}", highlight=False,
                      markup=True)

    await _warm_up(gw.config)
    out.print("[bold]1. Normal traffic[/]")
    for agent in AGENTS:
        await ask(*agent)
    out.print("[bold]2. Anthropic outage (every Anthropic deployment answers 503)[/]")
    phase = "outage"
    anthropic.set_plan(FaultPlan.error(503, message="Overloaded"))
    for agent in AGENTS[:5]:
        await ask(*agent)
    anthropic.set_plan(FaultPlan())
    phase = "recovered"
    out.print("[bold]3. Anthropic is back[/]")
    await asyncio.gather(*(ask(*agent) for agent in AGENTS[5:]))
    phase = "total-outage"
    out.print("[bold]4. Every cloud provider answers 503: only the local model is left[/]")
    anthropic.set_plan(FaultPlan.error(503, message="Overloaded"))
    openai.set_plan(FaultPlan.error(503, message="Service unavailable"))
    await ask("dev-1", "software-engineer", "checkout",
              "Write a Python one-liner that reverses a string s.", max_tokens=48,
              show_answer=True)
    anthropic.set_plan(FaultPlan())
    openai.set_plan(FaultPlan.latency(0.02))
    phase = "repeat"
    out.print("[bold]5. The same questions again: answered from the cache at $0[/]")
    for agent in AGENTS[:2]:
        await ask(*agent)
    phase = "runaway"
    out.print("[bold]6. A runaway agent asks for 100,000 output tokens on high-reasoning[/]")
    await ask("dev-2", "software-engineer", "search-revamp", "Rewrite the whole codebase.",
              max_tokens=100_000)


async def _warm_up(cfg: Config) -> None:
    """Load LiteLLM's provider code once per simulated provider, outside the Router and the
    ledger: a cold first call is slow, and latency-based routing would hold that
    against whichever deployment happened to answer first for the rest of the demo."""
    from llmgw._litellm import import_litellm

    litellm = import_litellm()
    seen: set[str] = set()
    for dep in cfg.model_list:
        params = dep.litellm_params
        if dep.provider in seen or params.api_key not in (DEMO_OPENAI_KEY, DEMO_ANTHROPIC_KEY):
            continue
        seen.add(dep.provider)
        await litellm.acompletion(model=params.model, api_base=params.api_base,
                                  api_key=params.api_key, max_tokens=1,
                                  messages=[{"role": "user", "content": "warm-up"}])


def run_demo(config_path: str | None = None, workdir: str = ".cache/demo",
             console: Console | None = None) -> str:
    """Run the demo on a fresh ledger under `workdir`; returns that ledger's URL."""
    from llmgw.gateway import LLMGateway

    out = console or Console(soft_wrap=True)
    base = load_config(config_path)
    folder = Path(workdir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ledger_url = f"sqlite:///{(folder / 'ledger.db').resolve()}"
    upgrade(ledger_url)
    out.print(f"Ledger: {ledger_url} (migrated)")
    out.print("Local model: fetching if needed (once per machine) and starting llama.cpp ...")
    model_path = fetch_model()
    # Anthropic answers faster, so latency-based routing prefers it until the outage.
    with OpenAISim(api_key=DEMO_OPENAI_KEY, plan=FaultPlan.latency(0.02)) as openai, \
            AnthropicSim(api_key=DEMO_ANTHROPIC_KEY) as anthropic, \
            LocalServer(model_path) as local:
        cfg = simulated_config(base, openai.base_url, anthropic.base_url, local.base_url)
        out.print(f"Simulators: OpenAI {openai.base_url}, Anthropic {anthropic.base_url}; "
                  f"local model {MODEL_ALIAS} at {local.base_url}")
        gw = LLMGateway(cfg, ledger_url=ledger_url)
        try:
            asyncio.run(_workload(gw, anthropic, openai, out))
        finally:
            gw.close()
        out.print("[bold]7. An agent in another process asks over HTTP (llmgw serve, the "
                  "openai SDK, a project key)[/]")
        admin_key = http_step(cfg, ledger_url, out)
    engine = make_engine(ledger_url)
    try:  # the same report and table `llmgw usage report` prints
        for by in ("agent", "model"):
            out.print()
            print_table(out, usage_report(engine, by=by), usage_totals(engine), by=by)
    finally:
        engine.dispose()
    out.print()
    out.print(f"Dashboard: LLMGW_LEDGER_URL={ledger_url} llmgw serve, then open "
              f"http://127.0.0.1:8000/ui and sign in with the demo's admin key:")
    out.print(admin_key, highlight=False, markup=False)
    return ledger_url
