"""The budget planner (llmgw.budgets.planner) over fakes of its budget store and ledger: the worst
case it holds, the downgrade of a spent budget, per-call constraints narrowing the
deployments, and the caller's params left as they were."""

from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from llmgw.budgets.planner import BudgetPlanner, prompt_rate
from llmgw.budgets.rules import BudgetPolicy, CounterKey, Rule
from llmgw.config.agents import Resolution
from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.pipeline.context import RequestContext
from llmgw.routing.constraints import CallConstraints, take_constraints

NOW = datetime(2026, 3, 10, 12, 0)
ASK = [{"role": "user", "content": "Review the release plan for risks and missing owners."}]

# deployment id -> (group, input, output, cache write 5m, cache write 1h) $/M tokens
DEPLOYMENTS = {
    "big-a": ("big", "3", "15", "3.75", "6"),
    "big-b": ("big", "2", "10", "2.5", "4"),
    "small-a": ("small", "1", "4", "1.25", "2"),
    "tiny-a": ("tiny", "0.1", "0.4", "0.125", "0.2"),
    "lean-a": ("lean", "0.5", "1", "0.625", "1"),  # falls back to small, which costs more
}


def per_token(usd_per_million: str) -> Decimal:
    return Decimal(usd_per_million) / 1_000_000


def config(*, margin: float = 1.0, budgets: dict[str, Any] | None = None,
           agent_types: dict[str, Any] | None = None) -> Config:
    model_list = []
    for dep_id, (group, inp, out, write, write_1h) in DEPLOYMENTS.items():
        model_list.append({
            "model_name": group,
            "litellm_params": {"model": "openai/gpt-4.1", "api_key": "sk-unit-test-key"},
            "model_info": {"id": dep_id, "input_cost_per_token": str(per_token(inp)),
                           "output_cost_per_token": str(per_token(out)),
                           "cache_read_input_token_cost": float(per_token(inp)) / 10,
                           "cache_creation_input_token_cost": float(per_token(write)),
                           "cache_creation_input_token_cost_above_1hr": float(per_token(write_1h))}})
    return config_from_dict({
        "model_list": model_list,
        "router_settings": {"num_retries": 0, "fallbacks": [{"big": ["small"]}, {"lean": ["small"]}]},
        "llmgw": {"default_group": "big", "agent_types": agent_types or {},
                  "ledger": {"url": "sqlite:///unused.db"}, "cache": {"backend": "none"},
                  "budgets": {"prompt_margin": margin, **(budgets or {})}}})


class FakeBudgetStore:
    """The two reads the planner makes: the DB's rules and the counters' (spent, held)."""

    def __init__(self, rules: list[Rule] | None = None,
                 counters: dict[tuple[str, str, str], tuple[int, int]] | None = None) -> None:
        self._rules = rules or []
        self._counters = counters or {}
        self.counter_reads: list[list[CounterKey]] = []

    def rules(self) -> list[Rule]:
        return list(self._rules)

    def counters(self, keys: Any) -> dict[CounterKey, tuple[int, int]]:
        keys = list(keys)
        self.counter_reads.append(keys)
        return {k: self._counters[(k.scope, k.scope_id, k.period)] for k in keys
                if (k.scope, k.scope_id, k.period) in self._counters}


class FakeLedger:
    """`run` is the ledger's worker thread: here, the call itself."""

    async def run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


@dataclass
class Request:
    message_dicts: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(ASK))
    caching: str | None = None


def planner(cfg: Config, store: FakeBudgetStore | None = None) -> BudgetPlanner:
    fakes: tuple[Any, Any] = (store or FakeBudgetStore(), FakeLedger())
    return BudgetPlanner(cfg, BudgetPolicy(cfg.llmgw.budgets), *fakes)


def ctx(agent_type: str | None = None) -> RequestContext:
    return RequestContext(request_id="req-1", agent_id="dev-1", agent_type=agent_type,
                          project_id="proj-a")


def route(group: str = "big", agent_type: str | None = None,
          reason: str = "default") -> Resolution:
    return Resolution(model_group=group, agent_type=agent_type, reason=reason)


def plan(p: BudgetPlanner, params: dict[str, Any], *, request: Request | None = None,
         resolution: Resolution | None = None) -> Any:
    r = resolution or route()
    return asyncio.run(p.plan(ctx(r.agent_type), r, request or Request(), params, NOW))


def tokens(p: BudgetPlanner, group: str = "big") -> int:
    return p.prompt_tokens(group, ASK)


# -- the worst case --------------------------------------------------------------------------


def test_worst_case_is_prompt_at_the_top_input_rate_plus_max_output_at_the_top_output_rate():
    p = planner(config())
    prompt = tokens(p)
    assert prompt > 5
    # big reaches small: the top rates of the chain are big-a's ($3 in, $15 out per M)
    assert p.worst_case_micros("big", ASK, 1000) == prompt * 3 + 1000 * 15
    # small reaches nothing: its own rates
    assert p.worst_case_micros("small", ASK, 1000) == prompt * 1 + 1000 * 4
    # lean's own rates are lower than its fallback's: the fallback's bound the call
    assert p.worst_case_micros("lean", ASK, 1000) == prompt * 1 + 1000 * 4


def test_worst_case_counts_a_cache_write_at_its_rate_and_the_1h_one_for_a_1h_ttl():
    p = planner(config())
    prompt = tokens(p)
    assert p.worst_case_micros("big", ASK, 200, caching="5m") == math.ceil(prompt * 3.75) + 3000
    assert p.worst_case_micros("big", ASK, 200, caching="1h") == prompt * 6 + 3000
    assert p.worst_case_micros("big", ASK, 200) == prompt * 3 + 3000


def test_worst_case_applies_the_prompt_margin_and_rounds_up_to_whole_micro_dollars():
    p = planner(config(margin=1.5))
    prompt = math.ceil(tokens(p) * 1.5)
    assert p.worst_case_micros("tiny", ASK, 7) == math.ceil(prompt * 0.1 + 7 * 0.4)
    assert isinstance(p.worst_case_micros("tiny", ASK, 7), int)


def test_tools_count_as_prompt():
    p = planner(config())
    tool = {"type": "function", "function": {
        "name": "lookup_owner", "description": "Find who owns a component of the release.",
        "parameters": {"type": "object", "properties": {"component": {"type": "string"}}}}}
    assert (p.worst_case_micros("small", ASK, 10, tools=[tool])
            > p.worst_case_micros("small", ASK, 10))


def test_prompt_rate_is_the_highest_a_prompt_token_may_be_billed():
    cfg = config()
    dep = cfg.deployment("big-b")
    assert prompt_rate(dep, None) == per_token("2")
    assert prompt_rate(dep, "5m") == per_token("2.5")
    assert prompt_rate(dep, "1h") == per_token("4")


def test_the_plan_holds_the_worst_case_at_the_calls_max_tokens():
    p = planner(config(budgets={"projects": {"*": {"daily_usd": 100}}}))
    made = plan(p, {"max_tokens": 300})
    assert made.amount == p.worst_case_micros("big", ASK, 300) == tokens(p) * 3 + 300 * 15
    assert made.max_tokens == 300 and "max_tokens" not in made.call_params
    assert [(x.scope, x.scope_id, x.period) for x in made.limits] == [("project", "proj-a", "day")]
    assert made.keys == (CounterKey("project", "proj-a", "day", datetime(2026, 3, 10)),)


def test_without_max_tokens_the_default_is_held_and_must_be_sent():
    p = planner(config(budgets={"default_max_tokens": 512, "per_request_usd": 5}))
    params: dict[str, Any] = {"temperature": 0}
    made = plan(p, params)
    assert made.max_tokens == 512 and made.call_params == {"max_tokens": 512}
    assert made.amount == tokens(p) * 3 + 512 * 15
    assert made.cap is not None and made.cap.limit_micros == 5_000_000
    assert params == {"temperature": 0}  # the caller's params are not touched


def test_no_budget_and_no_constraint_is_no_plan():
    assert plan(planner(config()), {"max_tokens": 10}) is None


# -- downgrade -------------------------------------------------------------------------------


def downgrading(spent: int, *, reason: str = "agent_type") -> Any:
    cfg = config(budgets={"agent_types": {"reviewer": {"daily_usd": 1, "warn_at": 0.5,
                                                       "downgrade_to": "tiny"}}},
                 agent_types={"reviewer": "big"})
    store = FakeBudgetStore(counters={("agent_type", "reviewer", "day"): (spent, 0)})
    return plan(planner(cfg, store), {"max_tokens": 100},
                resolution=route("big", "reviewer", reason))


def test_a_budget_past_its_warn_ratio_downgrades_the_group_and_holds_the_cheaper_worst_case():
    made = downgrading(500_000)  # half of $1: at warn_at 0.5
    assert made.group_choice.model_group == "tiny"
    assert "downgrade" in made.group_choice.reason and "big -> tiny" in made.group_choice.reason
    p = planner(config())
    assert made.amount == p.worst_case_micros("tiny", ASK, 100)


def test_under_the_warn_ratio_the_group_stays():
    made = downgrading(499_999)
    assert made.group_choice.model_group == "big"
    assert made.amount == planner(config()).worst_case_micros("big", ASK, 100)


def test_an_explicit_group_is_never_downgraded():
    assert downgrading(900_000, reason="explicit").group_choice.model_group == "big"


def test_held_amounts_count_toward_the_downgrade():
    cfg = config(budgets={"agent_types": {"reviewer": {"daily_usd": 1, "warn_at": 0.5,
                                                       "downgrade_to": "tiny"}}})
    store = FakeBudgetStore(counters={("agent_type", "reviewer", "day"): (200_000, 300_000)})
    made = plan(planner(cfg, store), {"max_tokens": 100}, resolution=route("big", "reviewer"))
    assert made.group_choice.model_group == "tiny"


def test_db_rules_replace_the_config_limits():
    cfg = config(budgets={"projects": {"*": {"daily_usd": 100}}})
    store = FakeBudgetStore(rules=[Rule("project", "proj-a", "day", 42, 0.9)])
    made = plan(planner(cfg, store), {"max_tokens": 10})
    assert [(x.limit_micros, x.warn_ratio) for x in made.limits] == [(42, 0.9)]


# -- constraints -----------------------------------------------------------------------------


def test_take_constraints_pops_them_and_the_call_wins_over_the_agent_types_defaults():
    params = {"max_cost_usd": 0.25, "temperature": 1}
    found = take_constraints(params, {"max_cost_usd": 1.0, "prefer": "cheapest"})
    assert found == CallConstraints(max_cost_micros=250_000, prefer="cheapest")
    assert params == {"temperature": 1}
    assert not take_constraints({}, None).any


def test_max_cost_keeps_only_the_deployments_whose_worst_case_fits():
    p = planner(config())
    prompt = tokens(p)
    # at 1000 output tokens: big-a 15000+3p, big-b 10000+2p, small-a 4000+p micro-dollars
    ceiling = 10_000 + 2 * prompt
    params = {"max_tokens": 1000, "max_cost_usd": ceiling / 1_000_000}
    made = plan(p, params)
    routing = made.deployment_plan
    assert routing.allowed == {"big": ["big-b"], "small": ["small-a"]}
    assert set(routing.excluded) == {"big-a"}
    assert routing.worst_case == {"big-a": 15_000 + 3 * prompt, "big-b": ceiling,
                                  "small-a": 4_000 + prompt}
    assert made.amount == ceiling  # the most an allowed deployment can cost
    assert made.group_choice.model_group == "big"
    assert made.call_params["fallbacks"] == [{"big": ["small"]}]
    assert "max_tokens" not in made.call_params  # the call gave one
    assert params == {"max_tokens": 1000, "max_cost_usd": ceiling / 1_000_000}


def test_a_group_with_nothing_that_fits_is_skipped_for_a_fallback_that_does():
    p = planner(config())
    made = plan(p, {"max_tokens": 1000, "max_cost_usd": 0.006})
    assert made.deployment_plan.groups == ["small"]
    assert made.group_choice.model_group == "small" and "max_cost_usd skips big" in made.group_choice.reason
    assert made.call_params["fallbacks"] == [{"small": []}]


def test_nothing_that_fits_is_a_refused_plan_at_the_cheapest_worst_case():
    p = planner(config())
    made = plan(p, {"max_tokens": 1000, "max_cost_usd": 0.000001})
    assert made.deployment_plan.refused
    assert made.amount == 4_000 + tokens(p)  # small-a, the cheapest


def test_prefer_cheapest_orders_each_group_by_worst_case():
    made = plan(planner(config()), {"max_tokens": 10, "prefer": "cheapest"})
    assert made.deployment_plan.allowed == {"big": ["big-b", "big-a"], "small": ["small-a"]}


def test_call_params_do_not_mutate_the_callers_params():
    p = planner(config(budgets={"projects": {"*": {"daily_usd": 100}}}))
    params = {"max_cost_usd": 1, "prefer": "cheapest", "tools": None, "metadata": {"k": "v"}}
    before = copy.deepcopy(params)
    made = plan(p, params)
    assert params == before
    assert made.call_params["max_tokens"] == 4096  # the default, for the hold to bound it
    made.call_params["fallbacks"].append("changed")
    assert plan(p, params).call_params["fallbacks"] == [{"big": ["small"]}]


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_either_output_limit_bounds_the_worst_case(key: str):
    p = planner(config(budgets={"per_request_usd": 1}))
    made = plan(p, {key: 77})
    assert made.max_tokens == 77 and made.amount == tokens(p) * 3 + 77 * 15
