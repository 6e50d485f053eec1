"""LiteLLM's OpenAI Responses API support, as llmgw uses it: a request's input and tools in
chat shape (for counting its tokens), Responses usage as LiteLLM prices it, and a per-attempt
hook that keeps tool types away from deployments that cannot take them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw._litellm import import_litellm
from llmgw.routing.siblings import NATIVE_RESPONSES_PROVIDERS as NATIVE_PROVIDERS


def _config() -> Any:
    import_litellm()
    from litellm.responses.litellm_completion_transformation.transformation import (
        LiteLLMCompletionResponsesConfig,
    )

    return LiteLLMCompletionResponsesConfig


def to_chat_messages(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """A Responses request's `instructions` and `input` as chat messages, and its function
    tools as chat tools: by LiteLLM's own bridge, for the token count."""
    config = _config()
    messages = [dict(m) if isinstance(m, Mapping) else m.model_dump(exclude_none=True)
                for m in config.transform_responses_api_input_to_messages(
                    body.get("input") or "", dict(body))]
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    tools = body.get("tools") or []
    chat_tools, _ = config.transform_responses_api_tools_to_chat_completion_tools(
        function_tools(tools))
    return messages, list(chat_tools or [])


def function_tools(tools: list[Any]) -> list[Any]:
    """The function tools of a Responses tool list, those inside `namespace` tools included
    (Codex groups its functions so)."""
    found: list[Any] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        if tool.get("type") == "function":
            found.append(dict(tool))
        elif tool.get("type") == "namespace":
            found.extend(function_tools(list(tool.get("tools") or [])))
    return found


def chat_usage(usage: Any) -> Any:
    """Responses usage as LiteLLM's chat `Usage` (cached and reasoning tokens kept), exactly as
    LiteLLM converts it for its own cost calculation."""
    import_litellm()
    from litellm.responses.utils import ResponseAPILoggingUtils

    if hasattr(usage, "model_dump"):
        usage = usage.model_dump()
    return ResponseAPILoggingUtils.transform_response_api_usage_to_chat_usage(usage)


# request id -> the tool types a deployment could not take, per attempt (read once, at the end)
DROPPED_TOOLS: dict[str, list[str]] = {}
_guard: Any = None


def install_tool_guard(request_id_key: str) -> None:
    """Register, once per process, the hook that runs after the Router picked a deployment:
    a deployment whose Responses support is LiteLLM's chat bridge gets the function tools
    (those of `namespace` tools too) and not the tool types it cannot run (hosted web search,
    and whatever OpenAI adds next); what was left out is noted for the ledger row."""
    global _guard
    from llmgw._litellm import add_callback

    if _guard is None:
        _guard = _tool_guard(request_id_key)
    add_callback(_guard)


def _tool_guard(request_id_key: str) -> Any:
    litellm = import_litellm()
    from litellm.integrations.custom_logger import CustomLogger

    class ToolGuard(CustomLogger):
        async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                                 call_type: Any) -> dict[str, Any] | None:
            if getattr(call_type, "value", call_type) != "aresponses":
                return None
            provider = kwargs.get("custom_llm_provider")
            if provider is None:
                try:
                    provider = litellm.get_llm_provider(model=str(kwargs.get("model")))[1]
                except Exception:
                    return None
            if provider in NATIVE_PROVIDERS:
                return None
            return _bridged(kwargs, request_id_key)

    return ToolGuard()


def _bridged(kwargs: dict[str, Any], request_id_key: str) -> dict[str, Any]:
    """A Responses call as a deployment behind LiteLLM's chat bridge can take it."""
    changed = dict(kwargs)
    items = kwargs.get("input")
    if isinstance(items, list) and kwargs.get("reasoning") and any(
            isinstance(i, Mapping) and i.get("type") == "function_call" for i in items):
        # A bridged tool turn has no signed reasoning to send back (Anthropic refuses a tool
        # turn with thinking on but without its thinking block): this attempt does not think.
        changed["reasoning"] = None
    tools = kwargs.get("tools")
    if tools:
        kept = function_tools(list(tools))
        dropped = sorted({str(t.get("type")) for t in tools
                          if isinstance(t, Mapping) and t.get("type") not in ("function",
                                                                                "namespace")})
        metadata = kwargs.get("litellm_metadata") or {}
        request_id = metadata.get(request_id_key) if isinstance(metadata, Mapping) else None
        if dropped and request_id:
            DROPPED_TOOLS.setdefault(str(request_id), []).extend(dropped)
        changed["tools"] = kept or None
    return changed
