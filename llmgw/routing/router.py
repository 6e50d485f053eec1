"""LiteLLM's Router, built from our config.

LiteLLM does retries, fallbacks, cooldowns and routing; llmgw adds its retry floors (every
sibling before a fallback group), its lean settings, and the attempt recorder
(`llmgw.routing.recorder`) that sees each call; the errors it raises are mapped in
`llmgw.routing.errors`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from llmgw import providers
from llmgw._litellm import errors as litellm_errors
from llmgw._litellm import registered_callbacks, remove_callbacks
from llmgw._litellm.router_class import (
    general_settings_class,
    hide_router_debug_in_errors,
    router_class,
)
from llmgw.config.models import Config
from llmgw.redact import Redactor
from llmgw.routing.capacity import CapacityGate
from llmgw.routing.credentials import CredentialGuard
from llmgw.routing.recorder import (
    ROUTER_KEY,
    RouterServices,
    attach_services,
    no_failover_after_auth_failure,
)
from llmgw.routing.siblings import retry_floors
from llmgw.types import Attempt

log = logging.getLogger("llmgw.routing.router")

_previous_router_callbacks: list[object] = []

# LiteLLM's Router default when num_retries is unset (openai.DEFAULT_MAX_RETRIES).
DEFAULT_NUM_RETRIES = 2
# Retries that would be a silent failover or a pointless repeat; not overridable.
_FORCED_RETRY_POLICY = {"AuthenticationErrorRetries": 0, "BadRequestErrorRetries": 0}


def _snapshot() -> list[object]:
    return registered_callbacks()


def _release_previous_router() -> None:
    remove_callbacks(_previous_router_callbacks)
    _previous_router_callbacks.clear()


def _quiet_litellm_logs() -> None:
    level = os.environ.get("LLMGW_LITELLM_LOG_LEVEL", "CRITICAL").upper()
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(level)
    hide_router_debug_in_errors()


# LiteLLM's own switches llmgw turns on in the Router it builds, because they change nothing a
# user sees; a value the user sets in `router_settings` wins, field by field. Only Router
# settings belong here: a `litellm.<name>` global would change every caller in the process.
# async_only_mode: llmgw calls only the Router's async API, so it needs no sync clients.
# What each candidate did to LiteLLM's CPU per call, and why the others stay off:
# bench/README.md ("Lean LiteLLM settings").
LEAN_GENERAL_SETTINGS: Mapping[str, Any] = {"async_only_mode": True}


def lean_general_settings(configured: Any, lean: bool = True) -> Any:
    """The Router's `router_general_settings`: llmgw's lean defaults (unless `lean` is off),
    then each field the user set (a mapping or LiteLLM's `RouterGeneralSettings`) over them."""
    RouterGeneralSettings = general_settings_class()  # noqa: N806  (LiteLLM's class)
    if isinstance(configured, RouterGeneralSettings):
        mine = configured.model_dump(exclude_unset=True)
    else:
        mine = dict(configured or {})
    return RouterGeneralSettings(**{**(LEAN_GENERAL_SETTINGS if lean else {}), **mine})


def build_router(config: Config, redactor: Redactor) -> Any:
    """A `litellm.Router` for the config, with its own services (`RouterServices`: guard,
    capacity gate, redactor) that the attempt recorder uses for its calls. LiteLLM's own
    callbacks are process-wide: this Router takes over those of the Router built before it
    (see `_release_previous_router`)."""
    _quiet_litellm_logs()
    settings = config.router_settings.router_kwargs()
    configured = dict(settings.pop("retry_policy", None) or {})
    policy = {**configured, **_FORCED_RETRY_POLICY}
    # A group's own policy replaces the Router's; each group of n retries a deployment-level
    # error at least n - 1 times, so every sibling is tried before a fallback group.
    by_group = settings.pop("model_group_retry_policy", None) or {}
    num_retries = settings.get("num_retries")
    floors = retry_floors({g: len(d) for g, d in config.groups().items()}, configured, by_group,
                          DEFAULT_NUM_RETRIES if num_retries is None else num_retries,
                          _FORCED_RETRY_POLICY)
    if floors:
        settings["model_group_retry_policy"] = floors
    if settings.pop("cache_responses", False):
        log.warning("router_settings.cache_responses is ignored: llmgw caches answers itself")
    settings.setdefault("timeout", config.llmgw.request_timeout_s)
    lean = config.llmgw.lean_litellm
    settings["router_general_settings"] = lean_general_settings(
        settings.get("router_general_settings"), lean)

    providers.register()  # `ruvector/...` deployments need their handler before the Router
    _release_previous_router()
    before = {id(cb) for cb in _snapshot()}
    model_list = [d.to_litellm() for d in config.model_list]
    if settings.get("routing_strategy") == "cost-based-routing":
        # LiteLLM's cost-based strategy reads prices from litellm_params or its public price
        # map by model name, never from model_info: without this it routes by list prices.
        for entry in model_list:
            info = entry["model_info"]
            entry["litellm_params"].update(input_cost_per_token=info["input_cost_per_token"],
                                           output_cost_per_token=info["output_cost_per_token"])
    services = RouterServices(config=config, redactor=redactor)
    # Every call of this Router names it, so its callbacks find its services (ROUTER_KEY).
    defaults = dict(settings.get("default_litellm_params") or {})
    defaults["metadata"] = {**(defaults.get("metadata") or {}), ROUTER_KEY: services.key}
    settings["default_litellm_params"] = defaults
    router = router_class(lean)(
        model_list=model_list,
        retry_policy=policy,
        fallback_access_check=no_failover_after_auth_failure,
        **settings,
    )
    _previous_router_callbacks.extend(cb for cb in _snapshot() if id(cb) not in before)
    _check_shared_state(config, redactor)
    services.guard = CredentialGuard(config, router)
    services.guard.warn_unset()
    services.gate = CapacityGate(config, config.router_settings.shared_state_url())
    attach_services(router, services)
    return router


def count_stream_failure(router: Any, attempt: Attempt) -> None:
    """Count a stream that failed after its first chunk as a failure of its deployment, as
    LiteLLM counts a failed call: toward `allowed_fails` / `allowed_fails_policy`, and a
    cooldown when over. LiteLLM's Router does not (its failure callback has run only for
    calls that failed before streaming). Counted as a server error (InternalServerError)."""
    if not attempt.deployment:
        return
    exc = litellm_errors.InternalServerError(
        message=f"stream failed mid-way: {attempt.error_message or attempt.error_class}",
        llm_provider=attempt.provider or "", model=attempt.model or "")
    now = datetime.now()
    try:
        router.deployment_callback_on_failure(
            kwargs={"exception": exc, "litellm_params": {
                "model_info": {"id": attempt.deployment},
                "metadata": {"model_group": attempt.model_group}}},
            completion_response=None, start_time=now, end_time=now)
    except Exception:  # counting must never break the request's settlement
        log.exception("could not count a failed stream against deployment %s",
                      attempt.deployment)


def _check_shared_state(config: Config, redactor: Redactor) -> None:
    """Say once, at start, when the Redis for shared Router state cannot be reached.

    LiteLLM keeps routing without it (cooldowns and latency stay per process), so this is
    a warning, not an error: an outage of Redis must not become an outage of the gateway."""
    url = config.router_settings.shared_state_url()
    if url is None:
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        log.warning("Shared Router state: Redis at %s is unreachable (%s); cooldowns and "
                    "latency stay per process until it is back. Check router_settings.redis_url "
                    "or LLMGW_REDIS_URL.", redactor.scrub(url), redactor.scrub(str(exc)))
    finally:
        client.close()
