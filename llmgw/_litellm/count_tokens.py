"""LiteLLM's two ways to count an Anthropic Messages request's input tokens: Anthropic's own
`/v1/messages/count_tokens` endpoint (LiteLLM's `AnthropicCountTokensHandler`: its request
transformation, headers and HTTP client), and LiteLLM's tokenizer (`token_counter`) over the
request translated to OpenAI's shape by LiteLLM's Anthropic adapter, tools included.

`litellm.acount_tokens` would do the first too, but it drops `tool_choice` and `thinking` (the
handler counts them) and takes only a string `system`; so llmgw calls the handler itself."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from llmgw._litellm import import_litellm

# What the handler takes as arguments of their own; every other field is an option it may count.
_OWN_ARGUMENTS = frozenset({"model", "messages", "system", "tools"})
# How the handler (1.106.2) words a failure that got no HTTP answer (it reports it as a 500).
_NO_ANSWER = "CountTokens processing error"


class ProviderCountFailed(Exception):
    """Anthropic's count_tokens endpoint gave no count; `status` is its HTTP status (None: no
    answer, or no credential to send). The message never holds a credential."""

    def __init__(self, status: int | None, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@cache
def _adapter() -> Any:
    import_litellm()  # LiteLLM's offline settings first
    from litellm.llms.anthropic.pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    return LiteLLMAnthropicMessagesAdapter()


async def anthropic_count(body: Mapping[str, Any], *, model: str, api_key: str | None,
                          api_base: str | None, timeout_s: float,
                          anthropic_beta: str | None = None) -> int:
    """Anthropic's count of `body` (an Anthropic Messages request) for `model` (Anthropic's
    name, no `anthropic/` prefix), at the deployment's `api_base` with its `api_key` (None:
    LiteLLM's default, ANTHROPIC_API_KEY). The caller's `anthropic-beta` goes along, merged
    with the token-counting beta. Raises ProviderCountFailed."""
    import_litellm()
    from litellm.llms.anthropic.common_utils import (
        AnthropicError,
        AnthropicModelInfo,
        merge_anthropic_beta_headers,
    )
    from litellm.llms.anthropic.count_tokens.token_counter import anthropic_count_tokens_handler

    auth = await AnthropicModelInfo.aget_auth_header(api_key=api_key, api_base=api_base)
    if auth is None:
        raise ProviderCountFailed(None, "no Anthropic API key for this deployment")
    headers = dict(auth)
    if anthropic_beta:
        headers["anthropic-beta"] = merge_anthropic_beta_headers(auth.get("anthropic-beta"),
                                                                 anthropic_beta)
    options = {k: v for k, v in body.items() if k not in _OWN_ARGUMENTS}
    try:
        result = await anthropic_count_tokens_handler.handle_count_tokens_request(
            model=model, messages=list(body["messages"]), auth_header=headers,
            api_base=api_base, timeout=timeout_s, tools=body.get("tools"),
            system=body.get("system"), optional_params=options)
    except AnthropicError as exc:  # the handler wraps every failure in it
        if str(exc.message).startswith(_NO_ANSWER):  # its wrap of a transport error
            raise ProviderCountFailed(None, "no answer from the endpoint") from None
        raise ProviderCountFailed(exc.status_code, f"HTTP {exc.status_code}") from None
    tokens = result.get("input_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise ProviderCountFailed(200, "the answer has no input_tokens count")
    return tokens


def tokenizer_count(body: Mapping[str, Any], *, model: str) -> int:
    """LiteLLM's tokenizer count of `body` (an Anthropic Messages request) for `model` (a
    LiteLLM model name): system, messages, tools and tool_choice, in OpenAI's shape as LiteLLM's
    adapter translates them. An image counts at LiteLLM's default size: no URL is fetched.
    Raises ValueError when the adapter cannot read the request."""
    litellm = import_litellm()
    try:
        translated, _names = _adapter().translate_anthropic_to_openai(dict(body))
    except (KeyError, TypeError, AttributeError) as exc:  # the adapter's word on a shape
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return int(litellm.token_counter(model=model, messages=translated["messages"],
                                     tools=translated.get("tools") or None,
                                     tool_choice=translated.get("tool_choice"),
                                     use_default_image_token_count=True))
