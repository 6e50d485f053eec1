"""llmgw: a policy layer over LiteLLM for fleets of agents.

    from llmgw import LLMGateway
    gw = LLMGateway()                      # model_list.yaml / LLMGW_CONFIG
    answer = await gw.complete("dev-1", "project-a", [{"role": "user", "content": "Hi"}])

Importing llmgw does not import LiteLLM (it takes seconds); `LLMGateway` does, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmgw import errors
from llmgw.config.loading import load_config
from llmgw.config.models import Config
from llmgw.errors import (
    AllDeploymentsFailed,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    ContextWindowExceeded,
    InvalidRequest,
    LedgerError,
    LLMGatewayError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    UnknownModelGroup,
)
from llmgw.types import Attempt, Completion, Usage

if TYPE_CHECKING:
    from llmgw.gateway import LLMGateway
    from llmgw.observe.metrics import PrometheusMetrics

__all__ = [
    "AllDeploymentsFailed", "Attempt", "AuthenticationFailed", "BudgetExceeded", "Completion",
    "Config", "ConfigError", "ContextWindowExceeded", "InvalidRequest", "LLMGateway",
    "LLMGatewayError", "LedgerError", "PrometheusMetrics", "ProviderError", "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited", "UnknownModelGroup", "Usage", "errors", "load_config",
]


def __getattr__(name: str) -> Any:
    if name == "LLMGateway":  # imports LiteLLM: only when asked for
        from llmgw.gateway import LLMGateway

        return LLMGateway
    if name == "PrometheusMetrics":
        from llmgw.observe.metrics import PrometheusMetrics

        return PrometheusMetrics
    raise AttributeError(f"module 'llmgw' has no attribute {name!r}")
