"""LiteLLM imported lazily, offline, once per process (`import_litellm`), and the small
helpers over it that several llmgw modules share.

The package `llmgw._litellm` is the one place llmgw imports LiteLLM (a test enforces it):
each of its modules wraps one part llmgw uses. `import litellm` is slow and, without these
settings, tries the internet at every import (price map, Anthropic beta headers, Hugging Face
tokenizers). CLI commands that do not call a model must never reach this package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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


# -- LiteLLM's private names: llmgw reaches them only through the functions below, so a
# LiteLLM upgrade is audited here.

# The Router's callback lists; a second Router must not inherit the first one's handlers.
CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                  "_async_failure_callback", "input_callback", "service_callback")

# Per-call flag: plain function tools never need LiteLLM's MCP gateway (nor its import).
SKIP_MCP_HANDLER = "_skip_mcp_handler"


def hidden_params(response: object) -> dict[str, Any]:
    """What LiteLLM tells about an answer beyond it (`_hidden_params`: the serving
    deployment's id, its response cost, headers...)."""
    return getattr(response, "_hidden_params", None) or {}


def add_callback(handler: object) -> None:
    """Register a logger with LiteLLM, appended: assigning the list would drop the Router's
    own handlers."""
    callbacks = import_litellm().callbacks
    if handler not in callbacks:
        callbacks.append(handler)


def remove_callback(handler: object) -> None:
    litellm = import_litellm()
    for name in CALLBACK_LISTS:
        handlers = getattr(litellm, name, None)
        if isinstance(handlers, list) and handler in handlers:
            handlers.remove(handler)


def remove_callbacks(handlers: list[object]) -> None:
    """Take `handlers` (by identity) out of every LiteLLM callback list, in one pass per list."""
    litellm = import_litellm()
    stale = {id(cb) for cb in handlers}
    for name in CALLBACK_LISTS:
        current = getattr(litellm, name, None)
        if isinstance(current, list):
            current[:] = [cb for cb in current if id(cb) not in stale]


def registered_callbacks() -> list[object]:
    """Every handler in LiteLLM's callback lists."""
    litellm = import_litellm()
    return [cb for name in CALLBACK_LISTS for cb in (getattr(litellm, name, None) or [])]


def text_count_function(model: str) -> object:  # Callable[[str], int] in LiteLLM 1.106.2
    """LiteLLM's own text tokenizer for `model` (the one `token_counter` uses)."""
    import_litellm()
    from litellm.litellm_core_utils.token_counter import _get_count_function

    return _get_count_function(model)


def cost_usd(model: str, deployment_id: str, prompt_tokens: int, completion_tokens: int,
             cached_tokens: int = 0) -> float:
    """LiteLLM's price of a usage at a Router deployment's configured prices (the Router
    registered them under the deployment's id): the computation that gives a non-streamed
    answer its `response_cost`, cached-token prices included."""
    litellm = import_litellm()
    from litellm.types.utils import ModelResponse, Usage

    details = {"cached_tokens": cached_tokens} if cached_tokens else None
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens,
                  prompt_tokens_details=details)
    return float(litellm.completion_cost(completion_response=ModelResponse(model=model,
                                                                           usage=usage),
                                         model=model, custom_pricing=True,
                                         router_model_id=deployment_id))


def lean_router_class() -> type:
    """`litellm.Router` minus per-call work that changes nothing a user sees
    (`llmgw._litellm.router_class`)."""
    from llmgw._litellm.router_class import lean_router_class as lean

    return lean()


_price_map: dict[str, Any] | None = None


def bundled_price_map() -> dict[str, Any]:
    """LiteLLM's price map as llmgw runs it (offline: the copy its package ships), without
    importing LiteLLM when it is not loaded yet (`llmgw models` stays fast)."""
    global _price_map
    if _module is not None:
        return dict(_module.model_cost)
    if _price_map is None:
        import importlib.util
        import json
        from pathlib import Path

        spec = importlib.util.find_spec("litellm")  # finds the package, runs none of it
        path = Path(spec.origin or "").parent / "model_prices_and_context_window_backup.json" \
            if spec else None
        _price_map = json.loads(path.read_text()) if path and path.is_file() else {}
    return _price_map
