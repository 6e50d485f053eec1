"""Per-call routing constraints: `max_cost_usd` and `prefer` (docs/routing.md).

LiteLLM's Router has no per-request cost ceiling or preference (its `cost-based-routing` is a
Router-wide strategy), so llmgw adds them. `plan_route` decides, before anything is reserved,
which deployments of the group and of every group it can reach may serve the call (their
worst case fits `max_cost_usd`) and in which order (`prefer`); the attempt recorder's
deployment filter then holds the Router to that plan at each pick. Groups keep their fallback
order: `prefer` orders the deployments inside each group, it does not trade quality for price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from llmgw.config.models import Config

Prefer = Literal["cheapest", "fastest"]
PREFER_VALUES: tuple[str, ...] = ("cheapest", "fastest")
CONSTRAINT_PARAMS = ("max_cost_usd", "prefer")


@dataclass(frozen=True, slots=True)
class CallConstraints:
    max_cost_micros: int | None = None
    prefer: str | None = None

    @property
    def any(self) -> bool:
        return self.max_cost_micros is not None or self.prefer is not None


def take_constraints(params: dict[str, Any], defaults: Mapping[str, Any] | None) -> CallConstraints:
    """Pop `max_cost_usd` / `prefer` from a call's params (validated by `llmgw.pipeline.params`); the
    agent type's defaults fill what the call leaves out."""
    given = {k: params.pop(k) for k in CONSTRAINT_PARAMS if k in params}
    merged = {**{k: v for k, v in (defaults or {}).items() if v is not None},
              **{k: v for k, v in given.items() if v is not None}}
    cost = merged.get("max_cost_usd")
    micros = None if cost is None else int(Decimal(str(cost)) * 1_000_000)
    return CallConstraints(max_cost_micros=micros, prefer=merged.get("prefer"))


@dataclass
class RoutePlan:
    """Where one call may go: group -> its deployment ids, most preferred first."""

    constraints: CallConstraints
    allowed: dict[str, list[str]]
    worst_case: dict[str, int]  # deployment id -> micro-dollars
    excluded: dict[str, str] = field(default_factory=dict)  # deployment id -> why

    @property
    def groups(self) -> list[str]:
        return [g for g, ids in self.allowed.items() if ids]

    @property
    def refused(self) -> bool:
        return not self.groups

    @property
    def amount(self) -> int:
        """The most any allowed deployment can cost: what the call holds."""
        return max((self.worst_case[i] for ids in self.allowed.values() for i in ids), default=0)

    @property
    def cheapest(self) -> int:
        return min(self.worst_case.values(), default=0)

    def fallbacks(self) -> list[dict[str, list[str]]]:
        """LiteLLM's per-request `fallbacks`: the first allowed group falls back to the others."""
        first, *rest = self.groups
        return [{first: rest}]

    def order(self, group: str, healthy: list[Any],
              latency_ms: Callable[[str], float | None]) -> list[Any]:
        """`healthy` restricted to the plan, most preferred first (for `prefer`), or as the
        Router's strategy would pick among them (no `prefer`)."""
        ids = self.allowed.get(group) or []
        rank = {dep_id: n for n, dep_id in enumerate(ids)}
        kept = [d for d in healthy if _id(d) in rank]
        if self.constraints.prefer == "fastest":
            # a deployment this process has not measured yet is tried once first (else it
            # would never be), then the fastest measured; ties go to the cheapest
            def key(d: Any) -> tuple[float, int]:
                ms = latency_ms(_id(d))
                return (-math.inf if ms is None else ms, rank[_id(d)])
            kept.sort(key=key)
            return kept[:1]
        if self.constraints.prefer == "cheapest":
            kept.sort(key=lambda d: rank[_id(d)])
            return kept[:1]
        return kept

    def note(self, chosen: str | None) -> dict[str, Any]:
        """Why `chosen` served the call, for its ledger row's metadata."""
        c = self.constraints
        note: dict[str, Any] = {}
        if c.max_cost_micros is not None:
            note["max_cost_micros"] = c.max_cost_micros
        if c.prefer:
            note["prefer"] = c.prefer
        note["eligible"] = [i for g in self.groups for i in self.allowed[g]]
        if self.excluded:
            note["excluded"] = dict(self.excluded)
        if chosen is not None and chosen in self.worst_case:
            why = []
            if c.prefer:
                why.append(f"{c.prefer} eligible deployment not failed or cooling down")
            if c.max_cost_micros is not None:
                why.append(f"worst case {self.worst_case[chosen]} <= max {c.max_cost_micros} "
                           "micro-dollars")
            note["chosen"] = chosen
            note["why"] = "; ".join(why)
        return note


def _id(d: Mapping[str, Any]) -> str:
    return str((d.get("model_info") or {}).get("id"))


def plan_route(config: Config, chain: list[str], worst_case: Callable[[str, Any], int],
               constraints: CallConstraints) -> RoutePlan:
    """The deployments of `chain` (a group and the groups it reaches) whose worst case fits,
    each group's in preference order (`cheapest`: by worst case, then price)."""
    allowed: dict[str, list[str]] = {}
    costs: dict[str, int] = {}
    excluded: dict[str, str] = {}
    limit = constraints.max_cost_micros
    for group in chain:
        deployments = config.groups()[group]
        fits = []
        for d in deployments:
            costs[d.id] = cost = worst_case(group, d)
            if limit is not None and cost > limit:
                excluded[d.id] = f"worst case {cost} > max_cost {limit} micro-dollars"
            else:
                fits.append(d)
        if constraints.prefer == "cheapest" or constraints.prefer == "fastest":
            fits.sort(key=lambda d: (costs[d.id], d.output_price, d.input_price))
        allowed[group] = [d.id for d in fits]
    return RoutePlan(constraints, allowed, costs, excluded)
