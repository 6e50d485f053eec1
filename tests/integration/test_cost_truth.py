"""The ledger equals each provider's bill: for every provider simulator, every dialect that
reaches it (native or translated by LiteLLM) and both stream modes, a row's `cost_micros` is
the provider's published formula over the usage it reported, computed here in exact decimal
arithmetic from the rates configured below and rounded once to micro-dollars; the row's token
columns hold every kind the provider reported. A real gateway over the simulators, a migrated
ledger (SQLite for the whole table, PostgreSQL for a representative part)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.sim import FaultPlan, OllamaSim, SimServer
from llmgw.sim.cohere import CohereSim
from llmgw.sim.gemini import GeminiSim
from llmgw.types import Completion, StreamDone
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows

GEMINI_KEY = "AIza-sim-cost-SECRET-24680"
COHERE_KEY = "co-sim-cost-SECRET-13579"
M = Decimal("0.000001")  # one micro-dollar: rates below are written in micro-dollars per token


@dataclass(frozen=True)
class Usage:
    """What a provider reports, provider-neutral: prompt includes cache reads and writes,
    completion includes reasoning (Gemini's thoughts too)."""

    prompt: int
    completion: int
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    reasoning: int = 0

    def plan(self) -> FaultPlan:
        return FaultPlan(prompt_tokens=self.prompt, completion_tokens=self.completion,
                         cached_tokens=self.read, cache_write_5m_tokens=self.write_5m,
                         cache_write_1h_tokens=self.write_1h, reasoning_tokens=self.reasoning)


@dataclass(frozen=True)
class Provider:
    name: str
    group: str
    deployment_id: str
    litellm_params: Callable[[dict[str, SimServer]], dict[str, Any]]
    rates: dict[str, Decimal]  # LiteLLM's model_info keys -> dollars per token
    usage: Usage
    bill: Callable[[Usage, dict[str, Decimal]], Decimal]  # the provider's formula, in dollars


def _openai_bill(u: Usage, r: dict[str, Decimal]) -> Decimal:
    # OpenAI: cached input at the cache-read rate; reasoning is inside completion, at output.
    return ((u.prompt - u.read) * r["input_cost_per_token"] + u.read * r["cache_read_input_token_cost"]
            + u.completion * r["output_cost_per_token"])


def _anthropic_bill(u: Usage, r: dict[str, Decimal]) -> Decimal:
    # Anthropic: uncached input, reads, writes at 5 minutes and at 1 hour, each at its rate.
    fresh = u.prompt - u.read - u.write_5m - u.write_1h
    return (fresh * r["input_cost_per_token"] + u.read * r["cache_read_input_token_cost"]
            + u.write_5m * r["cache_creation_input_token_cost"]
            + u.write_1h * r["cache_creation_input_token_cost_above_1hr"]
            + u.completion * r["output_cost_per_token"])


def _gemini_bill(u: Usage, r: dict[str, Decimal]) -> Decimal:
    # Gemini: cached content at its rate; thought tokens (reported apart from the candidates)
    # are output tokens: candidates + thoughts = the neutral completion count.
    candidates, thoughts = u.completion - u.reasoning, u.reasoning
    return ((u.prompt - u.read) * r["input_cost_per_token"] + u.read * r["cache_read_input_token_cost"]
            + (candidates + thoughts) * r["output_cost_per_token"])


def _plain_bill(u: Usage, r: dict[str, Decimal]) -> Decimal:
    return u.prompt * r["input_cost_per_token"] + u.completion * r["output_cost_per_token"]


# Token counts are chosen so each bill has a fractional micro-dollar (rounding is exercised)
# that is nowhere near half a micro-dollar (LiteLLM computes in floats).
PROVIDERS = {p.name: p for p in [
    Provider("openai", "c-oai", "cost-openai", lambda s: {
        "model": "openai/gpt-5", "api_base": s["openai"].base_url + "/v1", "api_key": OPENAI_KEY},
        {"input_cost_per_token": Decimal("1.25") * M, "output_cost_per_token": Decimal("10") * M,
         "cache_read_input_token_cost": Decimal("0.125") * M},
        Usage(prompt=5003, completion=301, read=4093, reasoning=201), _openai_bill),
    Provider("anthropic", "c-anth", "cost-anthropic", lambda s: {
        "model": "anthropic/claude-sonnet-4-5", "api_base": s["anthropic"].base_url,
        "api_key": ANTHROPIC_KEY},
        {"input_cost_per_token": Decimal("3") * M, "output_cost_per_token": Decimal("15") * M,
         "cache_read_input_token_cost": Decimal("0.3") * M,
         "cache_creation_input_token_cost": Decimal("3.75") * M,
         "cache_creation_input_token_cost_above_1hr": Decimal("6") * M},
        Usage(prompt=10_101, completion=51, read=8003, write_5m=1201, write_1h=601), _anthropic_bill),
    Provider("gemini", "c-gem", "cost-gemini", lambda s: {
        "model": "gemini/gemini-2.5-flash", "api_base": s["gemini"].base_url + "/v1beta",
        "api_key": GEMINI_KEY},
        {"input_cost_per_token": Decimal("0.3") * M, "output_cost_per_token": Decimal("2.5") * M,
         "cache_read_input_token_cost": Decimal("0.03") * M},
        Usage(prompt=3001, completion=403, read=2047, reasoning=251), _gemini_bill),
    Provider("cohere", "c-coh", "cost-cohere", lambda s: {
        "model": "cohere/command-r-sim", "api_base": s["cohere"].base_url + "/v2/chat",
        "api_key": COHERE_KEY},
        {"input_cost_per_token": Decimal("0.15") * M, "output_cost_per_token": Decimal("0.6") * M},
        Usage(prompt=1234, completion=57), _plain_bill),
    Provider("ollama", "c-oll", "cost-ollama", lambda s: {
        "model": "ollama_chat/llama3.2", "api_base": s["ollama"].base_url},
        {"input_cost_per_token": Decimal("0.1") * M, "output_cost_per_token": Decimal("0.2") * M},
        Usage(prompt=777, completion=33), _plain_bill),
]}
DIALECTS = ("chat", "messages", "responses")
NATIVE = {"openai": {"chat", "responses"}, "anthropic": {"messages"}}
QUESTION = "Plan the release."


def expected_micros(p: Provider) -> int:
    """The provider's bill, exact, rounded once (half-even, as llmgw.budgets.pricing rounds)."""
    exact = p.bill(p.usage, p.rates) / M
    assert abs(exact - exact.to_integral_value() - Decimal("0.5")) > Decimal("0.01"), exact
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def test_the_table_exercises_rounding_and_every_rate():
    """The bills above are not round numbers, and each rate changes its provider's bill."""
    for p in PROVIDERS.values():
        exact = p.bill(p.usage, p.rates) / M
        assert exact != exact.to_integral_value(), p.name
        for key in p.rates:
            doubled = {**p.rates, key: p.rates[key] * 2}
            assert p.bill(p.usage, doubled) != p.bill(p.usage, p.rates), (p.name, key)
    assert expected_micros(PROVIDERS["anthropic"]) == 12164  # 12163.65: rounded, not cut


def config(sims: dict[str, SimServer], ledger_url: str):
    return config_from_dict({
        "model_list": [{"model_name": p.group, "litellm_params": p.litellm_params(sims),
                        "model_info": {"id": p.deployment_id,
                                       **{k: float(v) for k, v in p.rates.items()}}}
                       for p in PROVIDERS.values()],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "c-oai", "ledger": {"url": ledger_url},
                  "cache": {"backend": "none"}},
    })


@pytest.fixture(scope="module")
def other_sims() -> Iterator[dict[str, SimServer]]:
    with GeminiSim(api_key=GEMINI_KEY) as gemini, CohereSim(api_key=COHERE_KEY) as cohere, \
            OllamaSim() as ollama:
        yield {"gemini": gemini, "cohere": cohere, "ollama": ollama}


@pytest.fixture
def all_sims(sims, other_sims) -> Iterator[dict[str, SimServer]]:
    openai_sim, anthropic_sim = sims
    every = {"openai": openai_sim, "anthropic": anthropic_sim, **other_sims}
    for sim in other_sims.values():
        sim.set_plan(FaultPlan())
        sim.reset()
    yield every
    for sim in other_sims.values():
        sim.set_plan(FaultPlan())
        sim.reset()


@pytest.fixture
async def gw(all_sims, migrated_ledger_url: str) -> AsyncIterator[Any]:
    from llmgw.gateway import LLMGateway

    gateway = LLMGateway(config(all_sims, migrated_ledger_url))
    yield gateway
    await gateway.aclose()


async def _ask(gw: Any, p: Provider, dialect: str, stream: bool) -> Completion:
    """One request to `p`'s group in `dialect`, streamed or not: its Completion."""
    if dialect == "chat":
        args: tuple[Any, ...] = ([{"role": "user", "content": QUESTION}],)
        kwargs: dict[str, Any] = {"model_group": p.group, "max_tokens": 1000}
        call, streamed = gw.complete, gw.stream
    elif dialect == "messages":
        args, kwargs = ({"model": p.group, "max_tokens": 1000,
                         "messages": [{"role": "user", "content": QUESTION}]},), {}
        call, streamed = gw.anthropic_messages, gw.anthropic_messages_stream
    else:
        args, kwargs = ({"model": p.group, "input": QUESTION, "max_output_tokens": 1000},), {}
        call, streamed = gw.responses, gw.responses_stream
    if not stream:
        return await call("dev-1", "p", *args, **kwargs)
    events = [e async for e in streamed("dev-1", "p", *args, **kwargs)]
    assert isinstance(events[-1], StreamDone), events[-1]
    return events[-1].completion


def _read(row: dict[str, Any]) -> int:
    # migration 0015 may rename cached_tokens to cache_read_tokens
    return row.get("cache_read_tokens", row.get("cached_tokens"))


def _case_id(provider: str, dialect: str, stream: bool) -> str:
    path = "native" if dialect in NATIVE.get(provider, set()) else "translated"
    return f"{provider}-{dialect}-{path}-{'stream' if stream else 'json'}"


CASES = list(itertools.product(PROVIDERS, DIALECTS, (False, True)))
# The PostgreSQL part: a native and a translated path of each kind of cache pricing.
ON_POSTGRES = {("anthropic", "messages", True), ("anthropic", "chat", True),
               ("anthropic", "responses", False), ("openai", "responses", True),
               ("openai", "messages", False), ("gemini", "chat", True), ("cohere", "chat", False)}
MATRIX = [pytest.param("sqlite", *c, id="sqlite-" + _case_id(*c)) for c in CASES] + [
    pytest.param("postgresql", *c, id="postgresql-" + _case_id(*c)) for c in CASES if c in ON_POSTGRES]


@pytest.mark.parametrize(("ledger_url", "provider", "dialect", "stream"), MATRIX,
                         indirect=["ledger_url"])
async def test_the_row_costs_what_the_provider_bills(gw, all_sims, migrated_ledger_url, provider,
                                                     dialect, stream):
    p = PROVIDERS[provider]
    all_sims[provider].set_plan(p.usage.plan())
    completion = await _ask(gw, p, dialect, stream)
    (sent,) = all_sims[provider].wait_for_responses(1)
    assert (sent.prompt_tokens, sent.completion_tokens) == (p.usage.prompt, p.usage.completion)
    (row,) = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["deployment_id"], row["stream"]) == ("ok", p.deployment_id, stream)
    assert row["cost_micros"] == expected_micros(p), (
        f"{provider} via {dialect} ({'stream' if stream else 'json'}): recorded "
        f"{row['cost_micros']} micros, the provider bills {expected_micros(p)}")
    assert completion.cost_micros == row["cost_micros"]


@pytest.mark.parametrize(("ledger_url", "provider", "dialect", "stream"), MATRIX,
                         indirect=["ledger_url"])
async def test_the_row_holds_every_token_kind_the_provider_reported(
        gw, all_sims, migrated_ledger_url, provider, dialect, stream):
    p = PROVIDERS[provider]
    u = p.usage
    all_sims[provider].set_plan(u.plan())
    await _ask(gw, p, dialect, stream)
    (row,) = ledger_rows(migrated_ledger_url)
    recorded = {"prompt": row["prompt_tokens"], "completion": row["completion_tokens"],
                "read": _read(row), "write": row["cache_write_tokens"],
                "write_1h": row["cache_write_1h_tokens"], "reasoning": row["reasoning_tokens"]}
    expected = {"prompt": u.prompt, "completion": u.completion, "read": u.read,
                "write": u.write_5m + u.write_1h, "write_1h": u.write_1h,
                "reasoning": u.reasoning}
    # What a dialect's own usage shape cannot carry, a translated answer cannot tell the row
    # (its cost still can: LiteLLM priced the provider's usage beneath it): Anthropic's usage
    # has no reasoning count, the Responses usage no 1-hour part of the cache writes.
    if dialect == "messages" and provider != "anthropic":
        expected["reasoning"] = 0
    if dialect == "responses" and provider == "anthropic":
        expected["write_1h"] = 0
    assert recorded == expected


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
async def test_the_three_dialects_record_the_same_cost_for_the_same_usage(
        gw, all_sims, migrated_ledger_url, provider, stream):
    p = PROVIDERS[provider]
    all_sims[provider].set_plan(p.usage.plan())
    costs = {dialect: (await _ask(gw, p, dialect, stream)).cost_micros for dialect in DIALECTS}
    rows = ledger_rows(migrated_ledger_url)
    assert [r["dialect"] for r in rows] == ["chat", "anthropic", "responses"]
    assert {d: r["cost_micros"] for d, r in zip(DIALECTS, rows, strict=True)} == costs
    assert len(set(costs.values())) == 1, costs
