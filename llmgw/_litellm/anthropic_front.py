"""LiteLLM's OpenAI <-> Anthropic Messages translation, for the Anthropic front
(`llmgw.server.anthropic_api`): its request/response adapter, its stream wrapper (OpenAI-shaped
chunks in, Anthropic SSE events out) and the response and chunk types they read.
Importing this module imports LiteLLM (offline settings first)."""

from __future__ import annotations

from functools import cache
from typing import Any

from llmgw._litellm import import_litellm

import_litellm()
from litellm.llms.anthropic.pass_through.adapters.streaming_iterator import (  # noqa: E402
    AnthropicStreamWrapper,
)
from litellm.llms.anthropic.pass_through.adapters.transformation import (  # noqa: E402
    LiteLLMAnthropicMessagesAdapter,
)
from litellm.types.utils import (  # noqa: E402
    ChatCompletionDeltaToolCall,
    Delta,
    Function,
    ModelResponse,
    ModelResponseStream,
    StreamingChoices,
    Usage,
)

__all__ = [
    "AnthropicStreamWrapper", "ChatCompletionDeltaToolCall", "Delta", "Function",
    "LiteLLMAnthropicMessagesAdapter", "ModelResponse", "ModelResponseStream", "StreamingChoices",
    "Usage", "messages_adapter",
]


@cache
def messages_adapter() -> Any:
    """The one `LiteLLMAnthropicMessagesAdapter` of the process (it keeps no per-call state):
    `translate_anthropic_to_openai`, `translate_openai_response_to_anthropic`."""
    return LiteLLMAnthropicMessagesAdapter()
