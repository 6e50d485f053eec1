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

    return tuple(anthropic_messages_response_as_sse_events(dict(message)))


def use_chat_completions_for_translation() -> None:
    """Deployments without a native Messages API get LiteLLM's chat-completions bridge, not
    its Responses bridge: OpenAI-compatible servers (llama.cpp, vLLM, ruvLLM, Ollama's /v1)
    speak chat completions, and every llmgw provider does."""
    setattr(import_litellm(), "use_chat_completions_url_for_anthropic_messages", True)  # noqa: B010


# The kwarg that carries a request's fields LiteLLM 1.106.2 does not know to its Anthropic
# request builder (llmgw's own name: no provider sees it).
PASSTHROUGH_KEY = "llmgw_passthrough"


@cache
def known_fields() -> frozenset[str]:
    """The Messages request fields LiteLLM's native Anthropic path sends on by itself."""
    import_litellm()
    from litellm.llms.anthropic.pass_through.messages.utils import (
        anthropic_messages_optional_param_keys,
    )

    return frozenset(anthropic_messages_optional_param_keys()) | {"messages", "model", "stream"}


def install_passthrough() -> None:
    """Anthropic deployments get every field of a Messages request, not only those LiteLLM
    1.106.2 knows (its native path keeps a fixed list, so a new API field would be dropped):
    LiteLLM builds the request, then the fields it left out are added back as sent. Through
    `litellm.AnthropicMessagesConfig`, the class its provider table instantiates."""
    litellm = import_litellm()
    base: Any = getattr(litellm, "AnthropicMessagesConfig")  # noqa: B009  # not in its stubs
    if getattr(base, "_llmgw_passthrough", False):
        return

    class PassThroughMessagesConfig(base):  # LiteLLM's own config class
        _llmgw_passthrough = True

        def transform_anthropic_messages_request(self, model: str, messages: list[dict],
                                                 anthropic_messages_optional_request_params: dict,
                                                 litellm_params: Any, headers: dict) -> dict:
            body = super().transform_anthropic_messages_request(
                model, messages, anthropic_messages_optional_request_params, litellm_params,
                headers)
            extra = getattr(litellm_params, PASSTHROUGH_KEY, None)
            if isinstance(extra, dict):
                for key, value in extra.items():
                    body.setdefault(key, value)
            return body

    setattr(litellm, "AnthropicMessagesConfig", PassThroughMessagesConfig)  # noqa: B010
    from litellm.utils import ProviderConfigManager

    ProviderConfigManager._get_provider_anthropic_messages_config_cached.cache_clear()


# Fields that only an Anthropic deployment (or a model that reasons) can take: elsewhere
# LiteLLM's bridge would turn them into OpenAI reasoning parameters the model refuses.
_THINKING_FIELDS = ("thinking", "output_config")


_guard: Any = None


def install_translation_guard() -> None:
    """Register the `translation_guard` once per process (LiteLLM's callbacks are global)."""
    global _guard
    from llmgw._litellm import add_callback

    if _guard is None:
        _guard = translation_guard()
    add_callback(_guard)


def translation_guard() -> Any:
    """A LiteLLM hook that runs per attempt, once the Router has picked the deployment: on a
    deployment that is not Anthropic it takes out the fields only Anthropic's own API knows
    (the pass-through extras, and thinking where the model cannot reason), so a fallback to
    OpenAI still answers (thinking is dropped where the target cannot take it; see
    docs/http/messages.md)."""
    litellm = import_litellm()
    from litellm.integrations.custom_logger import CustomLogger

    class TranslationGuard(CustomLogger):
        async def async_pre_request_hook(self, model: str, messages: list,
                                         kwargs: dict) -> dict | None:
            provider = (kwargs.get("litellm_params") or {}).get("custom_llm_provider")
            if provider is None:
                try:
                    provider = litellm.get_llm_provider(model=model)[1]
                except Exception:
                    return None
            if provider == "anthropic":
                return None
            if kwargs.get(PASSTHROUGH_KEY) is not None:
                kwargs[PASSTHROUGH_KEY] = None
            try:
                reasons = bool(litellm.supports_reasoning(model=model,
                                                          custom_llm_provider=provider))
            except Exception:
                reasons = False
            if not reasons:
                for name in _THINKING_FIELDS:
                    if kwargs.get(name) is not None or name == "thinking":
                        kwargs[name] = None
            return kwargs

    return TranslationGuard()
