"""What a custom LiteLLM provider is made of (`llmgw.providers`): LiteLLM's `CustomLLM` base
and its error, the response and stream-chunk types a handler returns, its token counter, and
the registry (`litellm.custom_provider_map`, the price map) a provider is registered in.
Importing this module imports LiteLLM (offline settings first)."""

from __future__ import annotations

from typing import Any

from llmgw._litellm import import_litellm

import_litellm()
import litellm as _litellm  # noqa: E402
from litellm import Usage, token_counter  # noqa: E402
from litellm.llms.custom_llm import CustomLLM, CustomLLMError  # noqa: E402  (not exported at top level)
from litellm.types.llms.openai import ChatCompletionUsageBlock  # noqa: E402
from litellm.types.utils import GenericStreamingChunk, ModelResponse  # noqa: E402

__all__ = [
    "ChatCompletionUsageBlock", "CustomLLM", "CustomLLMError", "GenericStreamingChunk",
    "ModelResponse", "Usage", "custom_provider_map", "register_prices", "setup_custom_providers",
    "token_counter", "unpriced",
]


def custom_provider_map() -> list[Any]:
    """`litellm.custom_provider_map`, created when unset: append to it, never replace it (other
    code in the process may have registered its own providers)."""
    if _litellm.custom_provider_map is None:
        _litellm.custom_provider_map = []
    return _litellm.custom_provider_map


def setup_custom_providers() -> None:
    """Make LiteLLM read the custom provider map now (its provider list), not at the first call."""
    from litellm.utils import custom_llm_setup

    custom_llm_setup()


def unpriced(models: set[str]) -> set[str]:
    """Those of `models` that LiteLLM's price map has no entry for."""
    return models - set(_litellm.model_cost)


def register_prices(prices: dict[str, dict[str, Any]]) -> None:
    """Add entries to LiteLLM's price map (`litellm.register_model`)."""
    _litellm.register_model(prices)
