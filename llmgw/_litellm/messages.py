"""LiteLLM's Anthropic Messages support, as llmgw uses it: the translation to OpenAI's shape
(for counting a request's tokens), Anthropic usage as LiteLLM prices it, and a whole answer
as the SSE events a stream of it would have been (a cached answer replayed)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from llmgw._litellm import import_litellm


@cache
def _adapter() -> Any:
    import_litellm()
    from litellm.llms.anthropic.pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    return LiteLLMAnthropicMessagesAdapter()


@cache
def _anthropic_config() -> Any:
    import_litellm()
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    return AnthropicConfig()


def to_openai_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request in OpenAI's chat shape, by LiteLLM's own adapter (the
    one its bridge uses): `messages` (the system prompt first), `tools`, `tool_choice`."""
    translated, _names = _adapter().translate_anthropic_to_openai(dict(body))
    return dict(translated)


def litellm_usage(usage: Mapping[str, Any]) -> Any:
    """Anthropic's usage object as LiteLLM's `Usage` (cache reads and writes, the 1-hour part
    of the writes), exactly as LiteLLM reads it from an Anthropic answer."""
    return _anthropic_config().calculate_usage(usage_object=dict(usage), reasoning_content=None)


def cost_of_usage(model: str, deployment_id: str, usage: Any) -> float:
    """LiteLLM's price of a LiteLLM `Usage` at a Router deployment's configured prices (the
    Router registered them under the deployment's id): every token kind in it."""
    litellm = import_litellm()
    from litellm.types.utils import ModelResponse

    return float(litellm.completion_cost(
        completion_response=ModelResponse(model=model, usage=usage), model=model,
        custom_pricing=True, router_model_id=deployment_id))


def answer_as_sse(message: Mapping[str, Any]) -> tuple[bytes, ...]:
    """A whole Anthropic message as the SSE events a real stream would have sent."""
    import_litellm()
    from litellm.llms.anthropic.pass_through.messages.streaming_iterator import (
        anthropic_messages_response_as_sse_events,
    )

    return tuple(anthropic_messages_response_as_sse_events(dict(message)))  # type: ignore[arg-type]


def use_chat_completions_for_translation() -> None:
    """Deployments without a native Messages API get LiteLLM's chat-completions bridge, not
    its Responses bridge: OpenAI-compatible servers (llama.cpp, vLLM, ruvLLM, Ollama's /v1)
    speak chat completions, and every llmgw provider does."""
    import_litellm().use_chat_completions_url_for_anthropic_messages = True
