"""The input-token count of an Anthropic Messages request (`POST /v1/messages/count_tokens`):
which deployment counts, and how.

The group's first deployment counts. An Anthropic deployment asks Anthropic's own count_tokens
endpoint, at its api_base with its key; when that fails (or its key's variable is unset) LiteLLM's
tokenizer counts instead and the answer says so. Any other deployment is counted by LiteLLM's
tokenizer for its model. A count is free: nothing is reserved, written to the ledger or cached.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llmgw._litellm.count_tokens import ProviderCountFailed, anthropic_count, tokenizer_count
from llmgw.config.models import Config, Deployment
from llmgw.config.router_settings import ENV_PREFIX
from llmgw.errors import InvalidRequest, UnknownModelGroup

log = logging.getLogger("llmgw.pipeline.count_tokens")

Source = Literal["provider", "tokenizer"]
# Counting is quick; a deployment without a timeout of its own must not hold a caller 10 minutes.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A count, who made it, and why the tokenizer stood in for the provider (if it did)."""

    input_tokens: int
    source: Source
    model_group: str
    deployment: str
    fallback_reason: str | None = None


class _Unresolved(Exception):
    """A deployment setting names an environment variable that is not set."""


async def count_input_tokens(config: Config, model_group: str, body: Mapping[str, Any], *,
                             anthropic_beta: str | None = None) -> TokenCount:
    """Count `body`'s input tokens on `model_group`'s first deployment (see the module)."""
    deployments = config.groups().get(model_group)
    if not deployments:
        raise UnknownModelGroup(model_group, list(config.groups()))
    deployment = deployments[0]
    reason: str | None = None
    if deployment.provider == "anthropic":
        try:
            tokens = await _ask_anthropic(deployment, body, anthropic_beta)
            return TokenCount(tokens, "provider", model_group, deployment.id)
        except ProviderCountFailed as exc:
            reason = f"Anthropic's count_tokens failed ({exc.reason})"
        except _Unresolved as exc:
            reason = str(exc)
        log.warning("Deployment %s: %s; LiteLLM's tokenizer counts instead", deployment.id,
                    reason)
    tokens = await _tokenize(deployment, body)
    return TokenCount(tokens, "tokenizer", model_group, deployment.id, reason)


async def _ask_anthropic(deployment: Deployment, body: Mapping[str, Any],
                         anthropic_beta: str | None) -> int:
    params = deployment.litellm_params
    model = params.model.split("/", 1)[1]
    return await anthropic_count(body, model=model, api_key=_resolved(params.api_key, "api_key"),
                                 api_base=_resolved(params.api_base, "api_base"),
                                 timeout_s=_timeout_s(params.timeout), anthropic_beta=anthropic_beta)


async def _tokenize(deployment: Deployment, body: Mapping[str, Any]) -> int:
    try:  # tokenizing a long conversation takes a while: off the event loop
        return await asyncio.to_thread(tokenizer_count, body, model=deployment.litellm_params.model)
    except ValueError as exc:
        raise InvalidRequest(f"The request cannot be counted: {exc}",
                             hint="Send Anthropic Messages content blocks and tools.") from None


def _resolved(value: str | None, name: str) -> str | None:
    """A setting's value, `os.environ/NAME` read as LiteLLM's Router reads it. An unset variable
    is refused: LiteLLM would send its default (another key, or Anthropic's public host)."""
    if value is None or not value.startswith(ENV_PREFIX):
        return value
    variable = value[len(ENV_PREFIX):]
    resolved = os.environ.get(variable)
    if not resolved:
        raise _Unresolved(f"its {name} names the environment variable {variable}, which is "
                          "not set")
    return resolved


def _timeout_s(timeout: float | str | None) -> float:
    if isinstance(timeout, int | float):
        return float(timeout)
    try:
        return float(_resolved(timeout, "timeout") or DEFAULT_TIMEOUT_S)
    except (_Unresolved, ValueError):
        return DEFAULT_TIMEOUT_S
