"""The one place llmgw imports LiteLLM: lazily, offline, once per process.

`import litellm` takes seconds and, without these settings, tries the internet at every
import (price map, Anthropic beta headers, Hugging Face tokenizers). CLI commands that do
not call a model must never reach this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "HF_HUB_OFFLINE": "1",
    "LITELLM_TELEMETRY": "False",
}

_module: ModuleType | None = None


@dataclass(frozen=True, slots=True)
class CooldownEntry:
    """Why LiteLLM's Router is cooling a deployment down (the HTTP status), and for how long."""

    status: int | None
    remaining_s: float


def set_offline_env() -> None:
    """Set LiteLLM's offline switches unless the user chose otherwise."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def import_litellm() -> ModuleType:
    """Import litellm with the offline settings applied first; cached after the first call."""
    global _module
    if _module is None:
        set_offline_env()
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        _module = litellm
    return _module


async def cooldown_statuses(router: object, deployment_ids: list[str]) -> dict[str, CooldownEntry]:
    """The deployments of `deployment_ids` that the Router is cooling down, with why and until
    when (from its cooldown store: in memory, or the shared Redis)."""
    import time

    cache = getattr(router, "cooldown_cache", None)
    if cache is None or not deployment_ids:
        return {}
    entries = await cache.async_get_active_cooldowns(model_ids=list(deployment_ids),
                                                     parent_otel_span=None)
    found: dict[str, CooldownEntry] = {}
    for dep_id, value in entries:
        try:
            status: int | None = int(value.get("status_code") or 0) or None
        except (TypeError, ValueError):
            status = None
        ends = float(value.get("timestamp") or 0) + float(value.get("cooldown_time") or 0)
        found[dep_id] = CooldownEntry(status=status, remaining_s=max(0.0, ends - time.time()))
    return found
