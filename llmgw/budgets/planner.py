"""Step 3's plan (docs/budgets.md): which limits apply to a request, what it may cost at
worst over every group it can reach, and whether a spent budget downgrades its group.

Reading rules and counters is blocking SQL: it runs in the ledger's worker threads, never
on the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from llmgw.budgets.pricing import token_cost_micros
from llmgw.budgets.rates import rates_of
from llmgw.budgets.rules import BudgetPolicy, CounterKey, Limit, Rule
from llmgw.config.agents import Resolution
from llmgw.config.models import Config
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.store import LedgerStore
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.tokens import PromptTokenCounter
from llmgw.routing.constraints import CallConstraints, RoutePlan, plan_route, take_constraints
from llmgw.types import (
    BudgetImpact,
    CostEstimate,
    DeploymentEstimate,
    Message,
)


def prompt_rate(deployment: Any, caching: str | None) -> Decimal:
    """The most a deployment may bill a prompt token of a call: its input rate, or its cache
    write rate when the call asks for caching (the 1-hour one for a 1-hour TTL)."""
    rate = deployment.input_price
    if caching is None:
        return rate
    rates = rates_of(deployment)
    rate = max(rate, rates["cache_write"].usd_per_token)
    if caching == "1h":
        rate = max(rate, rates["cache_write_1h"].usd_per_token)
    return rate


class Counted(Protocol):
    """A request as the planner reads it: its messages in OpenAI's chat shape (a dialect
    translates its own for the count)."""

    @property
    def message_dicts(self) -> list[dict[str, Any]]: ...


RULES_TTL_S = 5.0  # `llmgw budgets set` reaches running gateways within this
_MEMO_MAX = 10_000


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    group_choice: Resolution  # the model group and why (the downgrade's, if any)
    amount: int  # worst case, micro-dollars
    max_tokens: int
    limits: list[Limit]
    keys: tuple[CounterKey, ...]
    cap: Limit | None
    deployment_plan: RoutePlan | None = None  # per-call constraints (max_cost_usd, prefer)
    # What the call must carry so the hold bounds it: max_tokens when it gave none, and the
    # fallbacks its constraints allow. The caller adds them; the planner changes nothing.
    call_params: dict[str, Any] = field(default_factory=dict)


class BudgetPlanner:
    """Limits, worst case and downgrade of each request; reserves nothing."""

    def __init__(self, config: Config, policy: BudgetPolicy, store: BudgetStore,
                 ledger: LedgerStore) -> None:
        self.config = config
        self.policy = policy
        self.store = store
        self.ledger = ledger
        self._tokens = PromptTokenCounter()
        self._rules: list[Rule] = []
        self._rules_at = -math.inf
        self._refresh: asyncio.Task[list[Rule]] | None = None
        # (group, caching) -> the highest (prompt, output) rates it can reach
        self._top_prices: dict[tuple[str, str | None], tuple[Decimal, Decimal]] = {}
        # (agent, agent type, project, session) -> its limits and request cap, under `_limits_of`
        self._limits: dict[tuple[str, str | None, str, str | None],
                           tuple[list[Limit], Limit | None]] = {}
        self._limits_of: list[Rule] | None = None
        # id(limits) -> (limits, window start, window end, counter keys): `_counter_keys`
        self._keys: dict[int, tuple[list[Limit], datetime, datetime, tuple[CounterKey, ...]]] = {}

    async def rules(self) -> list[Rule]:
        """The database's budget rules, re-read at most every `RULES_TTL_S`, by one worker
        thread however many requests ask meanwhile."""
        if time.monotonic() - self._rules_at <= RULES_TTL_S:
            return self._rules
        task = self._refresh
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self._refresh = asyncio.ensure_future(self.ledger.run(self.store.rules))
            task.add_done_callback(self._refreshed)
        return await asyncio.shield(task)

    def _refreshed(self, task: asyncio.Task[list[Rule]]) -> None:
        if self._refresh is task:
            self._refresh = None
        if not task.cancelled() and task.exception() is None:
            self._rules, self._rules_at = task.result(), time.monotonic()

    async def plan(self, ctx: RequestContext, route: Resolution, request: Counted,
                   params: dict[str, Any], now: Any) -> BudgetPlan | None:
        """The limits, counters and worst-case amount of a request; None without budgets.
        `params` is left as it is: what the call must add (max_tokens when it gave none, so
        the hold bounds it; the fallbacks its constraints allow) is the plan's `call_params`."""
        params = dict(params)
        added: dict[str, Any] = {}
        constraints = take_constraints(params, self.config.llmgw.agent_type_defaults(
            route.agent_type))
        rules = await self.rules()
        limits: list[Limit] = []
        cap = None
        if rules or self.policy.configured:
            limits, cap = self._limits_for(ctx.agent_id, route.agent_type, ctx.project_id, rules,
                                           ctx.session_id)
        if not limits and cap is None and not constraints.any:
            return None
        if limits:
            route = await self._maybe_downgrade(route, limits, now)
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = self.config.llmgw.budgets.default_max_tokens
            if limits or cap is not None or constraints.max_cost_micros is not None:
                params["max_tokens"] = added["max_tokens"] = max_tokens  # the hold bounds it
        keys = self._counter_keys(limits, now)
        if constraints.any:
            routing = self.route_plan(route.model_group, request, params, int(max_tokens),
                                      constraints)
            if routing.refused:
                return BudgetPlan(route, routing.cheapest, int(max_tokens), limits, keys, cap,
                                  routing, added)
            first = routing.groups[0]
            if first != route.model_group:
                route = dataclasses.replace(
                    route, model_group=first,
                    reason=f"{route.reason}; max_cost_usd skips {route.model_group}")
            added["fallbacks"] = routing.fallbacks()
            return BudgetPlan(route, routing.amount, int(max_tokens), limits, keys, cap, routing,
                              added)
        amount = self.worst_case_micros(route.model_group, request.message_dicts,
                                        int(max_tokens), tools=params.get("tools"),
                                        tool_choice=params.get("tool_choice"),
                                        caching=getattr(request, "caching", None))
        return BudgetPlan(route, amount, int(max_tokens), limits, keys, cap, call_params=added)

    def route_plan(self, model_group: str, request: Counted, params: dict[str, Any],
                   max_tokens: int, constraints: CallConstraints) -> RoutePlan:
        """Which deployments of the group and its fallbacks fit the call's constraints, and in
        what order (`llmgw.routing.constraints`). Each deployment's worst case is priced like
        `worst_case_micros`, at its own prices."""
        prompts: dict[str, int] = {}
        margin = self.config.llmgw.budgets.prompt_margin
        caching = getattr(request, "caching", None)

        def worst(group: str, dep: Any) -> int:
            if group not in prompts:
                counted = self.prompt_tokens(group, request.message_dicts, params.get("tools"),
                                             params.get("tool_choice"))
                prompts[group] = math.ceil(counted * margin)
            return math.ceil((prompts[group] * prompt_rate(dep, caching)
                              + max_tokens * dep.output_price) * 1_000_000)

        return plan_route(self.config, self.config.fallback_chain(model_group), worst,
                          constraints)

    async def estimate(self, ctx: RequestContext, route: Resolution, request: Counted,
                       call_params: dict[str, Any], now: Any) -> CostEstimate:
        """What a call would cost (expected and worst case, per deployment it can reach) and
        which budgets it would hit; reserves nothing. The worst case is what `plan` holds."""
        plan = await self.plan(ctx, route, request, call_params, now)
        if plan is not None:
            route, max_tokens, amount = plan.group_choice, plan.max_tokens, plan.amount
        else:
            max_tokens = int(call_params.get("max_tokens")
                             or call_params.get("max_completion_tokens")
                             or self.config.llmgw.budgets.default_max_tokens)
            amount = self.worst_case_micros(route.model_group, request.message_dicts,
                                            max_tokens, tools=call_params.get("tools"),
                                            tool_choice=call_params.get("tool_choice"))
        prompt = self.prompt_tokens(route.model_group, request.message_dicts,
                                    call_params.get("tools"), call_params.get("tool_choice"))
        expected = min(max_tokens, max(16, prompt // 2))  # answers are usually shorter than asks
        chain = self.config.fallback_chain(route.model_group)
        per_deployment = [DeploymentEstimate(
            deployment=d.id, model_group=g, model=d.litellm_params.model,
            expected_micros=token_cost_micros(prompt, expected, d.input_price, d.output_price),
            worst_case_micros=token_cost_micros(prompt, max_tokens, d.input_price,
                                                d.output_price))
            for g in chain for d in self.config.groups()[g]]
        impacts: list[BudgetImpact] = []
        refused = False
        if plan is not None:
            if plan.cap is not None:
                over = amount > plan.cap.limit_micros
                refused |= over
                impacts.append(BudgetImpact(scope="request", scope_id="*", period="request",
                                            limit_micros=plan.cap.limit_micros, spent_micros=0,
                                            reserved_micros=0, would_exceed=over))
            counters = await self.ledger.run(self.store.counters, plan.keys)
            for key, limit in zip(plan.keys, plan.limits, strict=True):
                spent, held = counters.get(key, (0, 0))
                over = spent + held + amount > limit.limit_micros
                refused |= over
                impacts.append(BudgetImpact(scope=limit.scope, scope_id=limit.scope_id,
                                            period=limit.period, limit_micros=limit.limit_micros,
                                            spent_micros=spent, reserved_micros=held,
                                            would_exceed=over))
        if plan is not None and plan.deployment_plan is not None and plan.deployment_plan.refused:
            refused = True
        return CostEstimate(model_group=route.model_group, fallback_groups=chain[1:],
                            prompt_tokens=prompt, expected_completion_tokens=expected,
                            max_tokens=max_tokens, worst_case_micros=amount,
                            deployments=per_deployment, budgets=impacts,
                            would_be_refused=refused)

    def _limits_for(self, agent_id: str, agent_type: str | None, project_id: str,
                    rules: list[Rule], session_id: str | None = None
                    ) -> tuple[list[Limit], Limit | None]:
        if self._limits_of is not rules:  # rules reloaded: changed ones void what we know
            if rules != self._limits_of:
                self._limits.clear()
            self._limits_of = rules
        who = (agent_id, agent_type, project_id, session_id)
        found = self._limits.get(who)
        if found is None:
            if len(self._limits) >= _MEMO_MAX:
                self._limits.clear()
            found = self._limits[who] = (
                self.policy.limits(agent_id=agent_id, agent_type=agent_type,
                                   project_id=project_id, rules=rules, session_id=session_id),
                self.policy.request_cap(rules))
        return found

    def _counter_keys(self, limits: list[Limit], now: datetime) -> tuple[CounterKey, ...]:
        """The counters of `limits` in the windows containing `now`: the same tuple for as
        long as those windows last (the budget store works a tuple's counters out once)."""
        found = self._keys.get(id(limits))
        if (found is not None and found[0] is limits and now.tzinfo is None
                and found[1] <= now < found[2]):
            return found[3]
        keys = tuple(self.policy.counter_key(limit, now) for limit in limits)
        if keys and now.tzinfo is None:
            if len(self._keys) >= _MEMO_MAX:
                self._keys.clear()
            starts = [key.period_start for key in keys]
            ends = [self.policy.period_end(key.period_start, key.period) or datetime.max
                    for key in keys]  # None: a session's `total` never ends
            self._keys[id(limits)] = (limits, max(starts), min(ends), keys)  # holds `limits`
        return keys

    async def _maybe_downgrade(self, route: Resolution, limits: list[Limit],
                               now: Any) -> Resolution:
        target = self.policy.downgrade_group(route.agent_type)
        if not target or route.reason == "explicit" or route.model_group == target:
            return route
        keys = {self.policy.counter_key(limit, now): limit for limit in limits}
        counters = await self.ledger.run(self.store.counters, list(keys))
        for key, (spent, reserved) in counters.items():
            limit = keys[key]
            if spent + reserved >= limit.limit_micros * limit.warn_ratio:
                why = (f"downgrade: {limit.scope} {limit.scope_id} {limit.period} budget past "
                       f"{limit.warn_ratio:.0%} ({route.model_group} -> {target})")
                return dataclasses.replace(route, model_group=target, reason=why)
        return route

    def prompt_tokens(self, model_group: str, messages: list[Message] | list[dict[str, Any]],
                      tools: Any = None, tool_choice: Any = None) -> int:
        """Prompt tokens by LiteLLM's tokenizer for the group's first deployment's model,
        the tools' definitions (and a named tool choice) included."""
        first = self.config.groups()[model_group][0].litellm_params.model
        dicts = [m.model_dump(exclude_none=True) if isinstance(m, Message) else m
                 for m in messages]
        return self._tokens.count(first, dicts, tools=tools, tool_choice=tool_choice)

    def worst_case_micros(self, model_group: str,
                          messages: list[Message] | list[dict[str, Any]], max_tokens: int, *,
                          tools: list[dict[str, Any]] | None = None,
                          tool_choice: Any = None, caching: str | None = None) -> int:
        """The most a call can cost: prompt tokens (LiteLLM's tokenizer, with the configured
        margin; tool definitions count as prompt) at the highest rate any deployment may bill
        them (the input rate; a cache write's when the call asks for caching, the 1-hour one
        for a 1-hour TTL), and max_tokens at the highest output price, across the group and
        every group it can reach. Rounded up."""
        prices = self._top_prices.get((model_group, caching))
        if prices is None:  # the config does not change under a running gateway
            deployments = [d for g in self.config.fallback_chain(model_group)
                           for d in self.config.groups()[g]]
            prices = self._top_prices[(model_group, caching)] = (
                max(prompt_rate(d, caching) for d in deployments),
                max(d.output_price for d in deployments))
        counted = self.prompt_tokens(model_group, messages, tools, tool_choice)
        prompt = math.ceil(counted * self.config.llmgw.budgets.prompt_margin)
        return math.ceil((prompt * prices[0] + max_tokens * prices[1]) * 1_000_000)
