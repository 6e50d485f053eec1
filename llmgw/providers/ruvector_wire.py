"""What goes over the wire between the RuVector provider and ruvLLM or Ollama: the
conversation as one query (`flatten_messages`), Ollama's messages and options, answers read
and checked, HTTP errors as `RuVectorError` (the status LiteLLM maps), and the LiteLLM
response or stream chunks an answer becomes. No state: `ruvector.RuVectorLLM` drives it."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from llmgw._litellm.providers import (
    ChatCompletionUsageBlock,
    CustomLLMError,
    GenericStreamingChunk,
    ModelResponse,
    Usage,
    token_counter,
)

if TYPE_CHECKING:
    from llmgw.providers.ruvector import Settings

PROVIDER = "ruvector"
HIDDEN_KEY = "ruvector"  # response._hidden_params[HIDDEN_KEY]

UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class RuVectorError(CustomLLMError):
    """A failed ruvLLM (or Ollama fallback) call. ``status_code`` drives LiteLLM's mapping:
    401 AuthenticationError, 408 Timeout, 429 RateLimitError, 500 InternalServerError,
    503 ServiceUnavailableError, other 4xx their own classes. ``headers`` (Retry-After)
    reach the mapped exception as ``litellm_response_headers``."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, message=message)
        self.headers = httpx.Headers(dict(headers or {}))


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    info: dict[str, Any]  # what goes to _hidden_params[HIDDEN_KEY]


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request the provider logic asks its driver (sync or async) to make."""

    method: str
    url: str
    json: Any
    timeout: httpx.Timeout


# -- the conversation as one query ----------------------------------------------------------

_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant",
           "tool": "Tool", "function": "Tool"}


def flatten_messages(messages: list[Any]) -> str:
    """The conversation as ``"System: ...\\nUser: ...\\nAssistant: ...\\nTool (name): ..."``.

    One line per message (its text may span lines); assistant tool calls become
    ``[calls name({...})]``; tool results are labelled with the tool's name.
    Deterministic: the same messages always give the same query.
    """
    lines: list[str] = []
    call_names: dict[str, str] = {}
    for message in map(as_dict, messages):
        role = str(message.get("role") or "user")
        label = _LABELS.get(role, role.capitalize())
        if label == "Tool":
            name = message.get("name") or call_names.get(str(message.get("tool_call_id")))
            label = f"Tool ({name})" if name else "Tool"
        parts = [text] if (text := content_text(message.get("content"))) else []
        for call in message.get("tool_calls") or []:
            call = as_dict(call)
            function = as_dict(call.get("function") or {})
            name = str(function.get("name") or "")
            if call.get("id"):
                call_names[str(call["id"])] = name
            parts.append(f"[calls {name}({_arguments_text(function.get('arguments'))})]")
        lines.append(f"{label}: " + "\n".join(parts))
    return "\n".join(lines)


def content_text(content: Any) -> str:
    """A message's content as text: strings kept, text parts joined, other parts named."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in map(as_dict, content):
            kind = part.get("type", "text")
            texts.append(str(part.get("text", "")) if kind == "text" else f"[{kind.removesuffix('_url')}]")
        return "\n".join(t for t in texts if t)
    return str(content)


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, sort_keys=True, separators=(", ", ": "))


def ollama_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """OpenAI-style messages in Ollama's shape: text content, tool-call arguments as objects."""
    out = []
    for message in map(as_dict, messages):
        role = {"developer": "system", "function": "tool"}.get(str(message.get("role")),
                                                              str(message.get("role") or "user"))
        item: dict[str, Any] = {"role": role, "content": content_text(message.get("content"))}
        calls = []
        for call in message.get("tool_calls") or []:
            function = as_dict(as_dict(call).get("function") or {})
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments or "{}")
                except ValueError:
                    arguments = {"input": arguments}
            calls.append({"function": {"name": function.get("name"), "arguments": arguments or {}}})
        if calls:
            item["tool_calls"] = calls
        out.append(item)
    return out


def ollama_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI sampling parameters Ollama understands, in its names."""
    names = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
             "max_tokens": "num_predict", "max_completion_tokens": "num_predict"}
    return {ours: params[theirs] for theirs, ours in names.items() if params.get(theirs) is not None}


# -- responses ------------------------------------------------------------------------------

def ruvllm_answer(response: httpx.Response, settings: Settings, session_id: str | None,
                   messages: list[Any], model: str) -> Answer:
    data = json_answer(response, f"ruvLLM at {settings.api_base}")
    text = data.get("text")
    if not isinstance(text, str):
        raise RuVectorError(500, f"ruvLLM at {settings.api_base}: answer without a text field")
    return Answer(
        text=text,
        prompt_tokens=count_prompt_tokens(messages),
        completion_tokens=count_text_tokens(text),
        info={"served_by": "ruvllm", "model": model, "model_used": data.get("model_used"),
              "confidence": data.get("confidence"), "context_size": data.get("context_size"),
              "latency_ms": data.get("latency_ms"), "session_id": session_id,
              "api_base": settings.api_base},
    )


def json_answer(response: httpx.Response, who: str) -> dict[str, Any]:
    if not 200 <= response.status_code < 300:
        raise _http_error(response, who)
    try:
        data = response.json()
    except ValueError:
        raise RuVectorError(500, f"{who}: the answer is not valid JSON") from None
    if not isinstance(data, dict):
        raise RuVectorError(500, f"{who}: the answer is not a JSON object")
    return data


def transport_error(exc: httpx.HTTPError, who: str, *, again: bool = False) -> RuVectorError:
    """A call that got no answer, as the status the Router acts on: unreachable 503, timed
    out 408, cut off 500. `again`: an earlier server was unreachable as well."""
    if isinstance(exc, UNREACHABLE):
        return RuVectorError(503, f"{who} is unreachable{' too' if again else ''} "
                                  f"({type(exc).__name__})")
    if isinstance(exc, httpx.TimeoutException):
        return RuVectorError(408, f"{who}: Request timed out")
    return RuVectorError(500, f"{who}: connection failed ({type(exc).__name__})")


def checked(call: HttpCall, who: str) -> Generator[HttpCall, httpx.Response, None]:
    """A one-call flow that only checks the status (feedback)."""
    try:
        response = yield call
    except httpx.HTTPError as exc:
        raise transport_error(exc, who) from None
    if not 200 <= response.status_code < 300:
        raise _http_error(response, who)


def _http_error(response: httpx.Response, who: str) -> RuVectorError:
    """The error for an HTTP error answer: 4xx keep their status, 503 stays, other 5xx -> 500."""
    status = response.status_code
    if 400 <= status < 500 or status == 503:
        code = status
    else:
        code = 500
    text = response.text.strip()
    try:  # Ollama wraps its message as {"error": "..."}; ruvLLM sends plain text
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            text = parsed["error"]
    except ValueError:
        pass
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "retry-after-ms")}
    return RuVectorError(code, f"{who} answered HTTP {status}: {text[:500] or response.reason_phrase}",
                         headers=headers)


def to_model_response(model_response: ModelResponse | None, model: str, answer: Answer) -> ModelResponse:
    response = model_response if model_response is not None else ModelResponse()
    response.choices[0].message.content = answer.text
    response.choices[0].finish_reason = "stop"
    response.created = int(time.time())
    response.model = f"{PROVIDER}/{model}"
    response.usage = Usage(
        prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens)
    response._hidden_params[HIDDEN_KEY] = dict(answer.info)
    return response


def stream_chunks(answer: Answer) -> list[GenericStreamingChunk]:
    """LiteLLM's CustomLLM stream contract: the text, then a finished chunk with usage.

    ``provider_specific_fields`` become attributes of the last streamed chunk, so a
    streaming caller can read ``chunk.ruvector`` (the same dict as ``_hidden_params``).
    """
    usage: ChatCompletionUsageBlock = {
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    return [
        GenericStreamingChunk(text=answer.text, is_finished=False, finish_reason="", usage=None,
                              index=0, tool_use=None),
        GenericStreamingChunk(text="", is_finished=True, finish_reason="stop", usage=usage,
                              index=0, tool_use=None,
                              provider_specific_fields={HIDDEN_KEY: dict(answer.info)}),
    ]


# -- helpers --------------------------------------------------------------------------------

def count_prompt_tokens(messages: list[Any]) -> int:
    return int(token_counter(messages=[as_dict(m) for m in messages]))


def count_text_tokens(text: str) -> int:
    return int(token_counter(text=text, count_response_tokens=True)) if text else 0


def as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if callable(dump) else {}


def str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def positive(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number > 0 else default
