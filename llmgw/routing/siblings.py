"""Routing promises LiteLLM's Router does not keep by itself, as small pure functions.

LiteLLM picks the deployment (its routing strategy), retries, falls back and cools down.
Two things it does not do, so llmgw adds them through the Router's own hooks:

- Siblings before worse groups. LiteLLM's retry skips the deployment that just failed only
  for non-retryable statuses (`Router._deployment_ids_to_skip_on_retry`): after a 5xx, 429 or
  timeout it may pick the same deployment again, and a group's retries can run out before
  every sibling was tried. `siblings_first` (called from the recorder's
  `async_filter_deployments`, before each pick) leaves out what already failed in this
  request while another deployment remains; `retry_floors` gives each group at least one
  retry per sibling for the errors that say "this deployment, not this request".
- Per-call constraints (`max_cost_usd`, `prefer`): see `llmgw.routing.constraints`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Errors that are about the deployment (down, busy, slow), not about the request: another
# deployment of the same group may well answer. LiteLLM's RetryPolicy field names. Not
# DefaultRetries: it would also retry "every deployment is cooling down", with a backoff
# sleep, where LiteLLM falls back at once; connection errors and 502s follow num_retries.
SIBLING_RETRY_KINDS = ("TimeoutErrorRetries", "RateLimitErrorRetries",
                       "InternalServerErrorRetries", "ServiceUnavailableErrorRetries")


def deployment_id(deployment: Mapping[str, Any]) -> str | None:
    return (deployment.get("model_info") or {}).get("id")


def siblings_first(healthy: list[Any], failed: Iterable[str | None]) -> list[Any]:
    """`healthy` without the deployments that already failed in this request, unless that
    leaves none (a group's last resort is to retry what it has)."""
    tried = {d for d in failed if d}
    if not tried:
        return healthy
    fresh = [d for d in healthy if deployment_id(d) not in tried]
    return fresh or healthy


# Responses-API tool types every deployment can run (a bridged one as chat functions);
# any other type (hosted web search, ...) only a native Responses provider runs.
_PORTABLE_TOOL_TYPES = frozenset({"function", "namespace"})
NATIVE_RESPONSES_PROVIDERS = frozenset({"openai", "azure"})


def able_to_run_tools(healthy: list[Any], request_kwargs: Mapping[str, Any]) -> list[Any]:
    """For a Responses request with tool types only a native provider runs, the deployments
    that can run them, when the group has any (else all: the bridged one then runs without
    them, and the row says so)."""
    if "input" not in request_kwargs:  # not a Responses call
        return healthy
    tools = request_kwargs.get("tools") or ()
    if not any(isinstance(t, Mapping) and t.get("type") not in _PORTABLE_TOOL_TYPES
               for t in tools):
        return healthy
    able = [d for d in healthy if _provider_of(d) in NATIVE_RESPONSES_PROVIDERS]
    return able or healthy


def _provider_of(deployment: Mapping[str, Any]) -> str:
    params = deployment.get("litellm_params") or {}
    return str(params.get("custom_llm_provider") or str(params.get("model") or "").split("/")[0])


def retry_floors(group_sizes: Mapping[str, int], retry_policy: Mapping[str, Any],
                 by_group: Mapping[str, Mapping[str, Any]], num_retries: int,
                 forced: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per-group retry policies in which every group of n deployments retries each
    deployment-level error at least n - 1 times, so that each sibling is tried before the
    group falls back. A group's own policy replaces the Router's (LiteLLM's rule); a count
    the user set above the floor stays. Groups of one keep what they had."""
    out: dict[str, dict[str, Any]] = {g: {**dict(p or {}), **forced} for g, p in by_group.items()}
    for group, size in group_sizes.items():
        if size < 2:
            continue
        policy = {**dict(by_group.get(group) or retry_policy or {})}
        for kind in SIBLING_RETRY_KINDS:
            configured = policy.get(kind)
            policy[kind] = max(num_retries if configured is None else int(configured), size - 1)
        out[group] = {**policy, **forced}
    return out
