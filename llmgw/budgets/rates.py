"""The per-token rate of every token kind a deployment is billed, and where each came from:
the deployment's own `model_info` (LiteLLM's keys), LiteLLM's bundled price map for its model,
or, for a cache rate neither gives, the input rate (warned at start: LiteLLM would price those
tokens at $0, which no provider bills)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

log = logging.getLogger("llmgw.budgets.rates")

# llmgw's name of a token kind -> LiteLLM's model_info key for its per-token cost
RATE_KEYS: dict[str, str] = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
}
_CACHE_KINDS = ("cache_read", "cache_write", "cache_write_1h")
CONFIG, MAP, INPUT = "config", "litellm map", "input rate"


@dataclass(frozen=True, slots=True)
class Rate:
    usd_per_token: Decimal
    source: str  # CONFIG, MAP (of which model), INPUT


def rates_of(deployment: Any) -> dict[str, Rate]:
    """Every rate of a deployment (a `config.Deployment`), with its source."""
    return _rates(deployment.id, deployment.litellm_params.model,
                  tuple(sorted((k, str(v)) for k, v in _info_of(deployment).items())))


def _info_of(deployment: Any) -> dict[str, Any]:
    info = deployment.model_info
    found = {**(info.model_extra or {})}
    found["input_cost_per_token"] = deployment.input_price
    found["output_cost_per_token"] = deployment.output_price
    return {k: v for k, v in found.items() if k in RATE_KEYS.values() and v is not None}


@cache
def _rates(dep_id: str, model: str, configured: tuple[tuple[str, str], ...]) -> dict[str, Rate]:
    mine = dict(configured)
    bundled = _bundled(model)
    rates: dict[str, Rate] = {}
    for kind, key in RATE_KEYS.items():
        if key in mine:
            rates[kind] = Rate(Decimal(mine[key]), CONFIG)
        elif kind in _CACHE_KINDS and bundled.get(key) is not None:
            rates[kind] = Rate(Decimal(repr(float(bundled[key]))), f"{MAP} ({model})")
        elif kind in _CACHE_KINDS:
            rates[kind] = Rate(Decimal(mine["input_cost_per_token"]), INPUT)
    return rates


def _bundled(model: str) -> dict[str, Any]:
    """LiteLLM's bundled price entry for a model name (with or without its provider)."""
    from llmgw._litellm import bundled_price_map

    table = bundled_price_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = table.get(name)
        if isinstance(entry, dict):
            return entry
    return {}


def litellm_model_info(deployment: Any) -> dict[str, float]:
    """The cache rates LiteLLM must be given for a deployment, so it prices every kind as
    llmgw reports it (a rate it has nowhere is 0 to LiteLLM)."""
    return {RATE_KEYS[kind]: float(rate.usd_per_token)
            for kind, rate in rates_of(deployment).items() if kind in _CACHE_KINDS}


def snapshot(deployment: Any) -> dict[str, str]:
    """The rates as a ledger row keeps them: compact, exact decimal strings."""
    return {kind: format(rate.usd_per_token.normalize(), "f")
            for kind, rate in rates_of(deployment).items()}


def warn_input_rate_fallbacks(deployments: list[Any]) -> list[str]:
    """Say once, at start, where each deployment's cache rates come from when its config
    gives none (LiteLLM's map, logged), and warn for those priced at the input rate because
    nothing names them: cache reads anywhere, cache writes where the provider bills them
    above input (Anthropic). Returns the deployments warned about."""
    warned = []
    for dep in deployments:
        if dep.input_price == 0:  # a free local model bills no cache either
            continue
        rates = rates_of(dep)
        mapped = [k for k, r in rates.items() if r.source.startswith(MAP)]
        if mapped:
            log.info("deployment %s: %s from LiteLLM's price map for %s", dep.id,
                     ", ".join(f"{k} ${rates[k].usd_per_token * 1_000_000:f}/Mtok" for k in mapped),
                     dep.litellm_params.model)
        kinds = [k for k, r in rates.items() if r.source == INPUT
                 and (k == "cache_read" or dep.provider == "anthropic")]
        if kinds:
            warned.append(dep.id)
            log.warning("deployment %s (%s): no %s rate in model_info or LiteLLM's price map; "
                        "those tokens are priced at its input rate. Set %s in its model_info.",
                        dep.id, dep.litellm_params.model, ", ".join(kinds),
                        ", ".join(RATE_KEYS[k] for k in kinds))
    return warned
