"""`POST /v1/messages`: the Anthropic Messages API (JSON, and its SSE event sequence), so the
Anthropic SDK and tools built on it can point their base URL at llmgw.

The translation is LiteLLM's own Anthropic adapter (`LiteLLMAnthropicMessagesAdapter`,
`AnthropicStreamWrapper`): requests into OpenAI's shape for the gateway, answers and stream
chunks back. Errors use Anthropic's shape (llmgw.server.errors)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from functools import cache
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmgw.ledger.api_keys import KeyInfo
from llmgw.server.app import call_gateway
from llmgw.server.auth import caller_of
from llmgw.server.common import (
    ERROR_STATUSES,
    SSE_EVENT,
    SSEResponse,
    dumps,
    fact_headers,
    facts,
    group_of,
    require_key,
)
from llmgw.server.errors import FrontError, stream_error_payload
from llmgw.server.schemas import AnthropicError
from llmgw.types import Completion, ContentDelta, StreamDone, StreamError, StreamEvent

router = APIRouter()
Key = Annotated[KeyInfo, Depends(require_key)]
_NOT_PARAMS = frozenset({"model", "messages", "stream", "user"})


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. cache_control, citations

    type: Literal["text"]
    text: str


class ImageBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["image"]
    source: dict[str, Any]


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock,
                  Field(discriminator="type")]


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, max_length=200)


class MessagesBody(BaseModel):
    """Anthropic's Messages request. `model` is a model group (or `auto`); the project and
    agent come from the key (an any-agent key: `metadata.user_id` or X-LLMGW-Agent)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}],
         "metadata": {"user_id": "agent-1"}},
        {"model": "auto", "max_tokens": 64, "stream": True,
         "messages": [{"role": "user", "content": "Hello"}]}]})

    model: str = Field(max_length=200)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    system: str | list[TextBlock] | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None


class MessagesResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: dict[str, Any]


@cache
def _adapter() -> Any:
    from llmgw._litellm import import_litellm

    import_litellm()  # LiteLLM's offline settings first
    from litellm.llms.anthropic.pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    return LiteLLMAnthropicMessagesAdapter()


@router.post("/v1/messages", response_model=MessagesResponse, tags=["anthropic"],
             responses={**{s: {"model": AnthropicError} for s in ERROR_STATUSES},
                        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "JSON, or SSE when stream"}})
async def messages(body: MessagesBody, request: Request, key: Key) -> Any:
    """Anthropic's Messages API over the gateway; facts in `x-llmgw-*` headers (and `llmgw`),
    a stream's `message_stop` event carries them."""
    caller = caller_of(key, request, user=body.metadata.user_id if body.metadata else None)
    adapter = _adapter()
    try:
        translated, tool_names = adapter.translate_anthropic_to_openai(
            body.model_dump(exclude_none=True))
    except (KeyError, TypeError, ValueError) as exc:  # the adapter's word on a shape it refuses
        raise FrontError(400, "invalid_request", f"The request cannot be translated: "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from None
    params = {k: v for k, v in translated.items() if k not in _NOT_PARAMS}
    gateway = request.app.state.gateway
    call = dict(agent_type=caller.agent_type, model_group=group_of(body.model), **params)
    if not body.stream:
        completion = await call_gateway(request, gateway.complete(
            caller.agent_id, caller.project_id, translated["messages"], **call))
        answer = dict(adapter.translate_openai_response_to_anthropic(
            _model_response(completion), tool_names))
        answer["llmgw"] = facts(completion)
        return JSONResponse(answer, headers=fact_headers(completion))
    events = gateway.stream(caller.agent_id, caller.project_id, translated["messages"], **call)
    try:  # up to the first event, a failure is still an HTTP status
        first = await call_gateway(request, anext(events))
    except BaseException:
        with anyio.CancelScope(shield=True):
            await events.aclose()
        raise
    return SSEResponse(_sse(first, events, model=body.model, tool_names=tool_names))


def _model_response(c: Completion) -> Any:
    from litellm import ModelResponse, Usage

    message: dict[str, Any] = {"role": "assistant", "content": c.content}
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    return ModelResponse(
        id=f"msg_{c.request_id}", model=c.model_group,
        choices=[{"index": 0, "message": message, "finish_reason": _finish(c)}],
        usage=Usage(prompt_tokens=c.usage.prompt_tokens,
                    completion_tokens=c.usage.completion_tokens,
                    total_tokens=c.usage.total_tokens))


def _finish(c: Completion) -> str:
    return c.finish_reason or ("tool_calls" if c.tool_calls else "stop")


class _Broken(Exception):
    """The stream broke after its first token: the SSE ends with an `error` event."""

    def __init__(self, event: StreamError) -> None:
        self.event = event


async def _sse(first: StreamEvent, events: AsyncGenerator[StreamEvent, None], *, model: str,
               tool_names: dict[str, str]) -> AsyncIterator[str]:
    """Our stream events as OpenAI-shaped LiteLLM chunks, through LiteLLM's Anthropic stream
    wrapper: message_start, content blocks, message_delta (stop reason, usage),
    message_stop (with the facts as `llmgw`)."""
    from litellm.llms.anthropic.pass_through.adapters.streaming_iterator import (
        AnthropicStreamWrapper,
    )
    from litellm.types.utils import (
        ChatCompletionDeltaToolCall,
        Delta,
        Function,
        ModelResponseStream,
        StreamingChoices,
        Usage,
    )

    done: dict[str, Any] = {}

    def chunk(delta: Any = None, finish: str | None = None) -> Any:
        return ModelResponseStream(model=model, choices=[StreamingChoices(
            index=0, delta=delta or Delta(), finish_reason=finish)])

    async def chunks() -> AsyncIterator[Any]:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, StreamDone):
                c = event.completion
                done.update(facts(c))
                yield chunk(finish=_finish(c))
                last = ModelResponseStream(model=model, choices=[])
                last.usage = Usage(prompt_tokens=c.usage.prompt_tokens,
                                   completion_tokens=c.usage.completion_tokens,
                                   total_tokens=c.usage.total_tokens)
                yield last
                return
            if isinstance(event, StreamError):
                raise _Broken(event)
            if isinstance(event, ContentDelta):
                yield chunk(Delta(content=event.text))
            else:
                yield chunk(Delta(content=None, tool_calls=[ChatCompletionDeltaToolCall(
                    index=event.index, id=event.id, type="function" if event.id else None,
                    function=Function(name=event.name, arguments=event.arguments))]))
            event = await anext(events, None)

    wrapper = AnthropicStreamWrapper(completion_stream=chunks(),  # type: ignore[arg-type]  # async use only
                                     model=model,
                                     tool_name_mapping=tool_names)
    try:
        async for item in wrapper:
            if item.get("type") in ("message_delta", "message_stop") and done:
                item = {**item, "llmgw": done}
            yield f"event: {item.get('type', 'message')}\ndata: {dumps(item)}\n\n"
    except _Broken as broken:
        e = broken.event
        payload = {**stream_error_payload(e.error, e.message, "anthropic"),
                   "llmgw": facts(e.partial)}
        yield f"event: error\ndata: {dumps(payload)}\n\n"
    finally:  # a hang-up cancels us here: the gateway settles what was generated
        with anyio.CancelScope(shield=True):
            await events.aclose()
