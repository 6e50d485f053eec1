"""`POST /v1/messages`: the Anthropic Messages API (JSON, and its SSE event sequence), so the
Anthropic SDK and the tools built on it (Claude Code) can point their base URL at llmgw.

A thin front over `LLMGateway.anthropic_messages`: on an Anthropic deployment the answer and
every event are what Anthropic sent (thinking blocks and signatures, cache usage, betas); on
the others, LiteLLM's translation. llmgw's facts ride in the `x-llmgw-*` headers, the JSON
answer's `llmgw` and the stream's `message_stop`. Errors use Anthropic's shape."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from llmgw.dialects.anthropic import FORWARDED_HEADERS, MessagesRequest
from llmgw.ledger.api_keys import KeyInfo
from llmgw.server.auth import caller_of
from llmgw.server.common import (
    ERROR_STATUSES,
    SSE_EVENT,
    SSEResponse,
    broken_stream,
    dumps,
    fact_headers,
    facts,
    require_key,
    stream_request_id,
    until_disconnect,
)
from llmgw.server.errors import FrontError, stream_error_payload
from llmgw.server.key_limits import key_pass
from llmgw.server.schemas import AnthropicError
from llmgw.types import StreamDone, StreamError, StreamEvent, WireEvent

router = APIRouter()
Key = Annotated[KeyInfo, Depends(require_key)]


@router.post("/v1/messages", tags=["anthropic"],
             responses={**{s: {"model": AnthropicError} for s in ERROR_STATUSES},
                        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "An Anthropic message (JSON), or its SSE events "
                                             "when stream"}})
async def messages(body: Annotated[MessagesRequest, Body()], request: Request, key: Key) -> Any:
    """Anthropic's Messages API over the gateway. Every field llmgw does not read goes to the
    provider as sent; `anthropic-beta` too."""
    raw = await request.json()  # the body as sent: what the provider gets
    metadata = body.metadata or {}
    user_id = metadata.get("user_id") if isinstance(metadata.get("user_id"), str) else None
    caller = caller_of(key, request, anthropic_user_id=user_id)
    gateway = request.app.state.gateway
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS
               if name in request.headers}
    call = dict(agent_type=caller.agent_type, session_id=caller.session_id,
                end_user=caller.end_user, headers=headers)
    async with key_pass(request, caller, dialect="anthropic", stream=bool(body.stream)) as held:
        if not body.stream:
            completion = await until_disconnect(request, gateway.anthropic_messages(
                caller.agent_id, caller.project_id, raw, **call))
            answer = {**(completion.body or {}), "llmgw": facts(completion)}
            return JSONResponse(answer, headers=fact_headers(completion))
        events = held.wrap(gateway.anthropic_messages_stream(caller.agent_id,
                                                             caller.project_id, raw, **call))
        try:  # up to the first event, a failure is still an HTTP status
            first = await until_disconnect(request, anext(events))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await events.aclose()
            raise
    return SSEResponse(_sse(first, events), request_id=stream_request_id(first))


async def _sse(first: StreamEvent, events: AsyncGenerator[StreamEvent, None]) -> AsyncIterator[str]:
    """The provider's events as they came, but `message_stop`, which waits for the settled
    facts (cost, request id) and carries them as `llmgw`; a break ends with an `error`."""
    held: WireEvent | None = None
    event: StreamEvent | None = first
    try:
        while event is not None:
            if isinstance(event, WireEvent):
                if event.event == "message_stop":
                    held = event
                else:
                    yield event.raw or f"event: {event.event}\ndata: {dumps(event.data)}\n\n"
            elif isinstance(event, StreamDone):
                stop = {**(held.data if held is not None else {"type": "message_stop"}),
                        "llmgw": facts(event.completion)}
                yield f"event: message_stop\ndata: {dumps(stop)}\n\n"
                return
            elif isinstance(event, StreamError):
                payload = {**stream_error_payload(event.error, event.message, "anthropic"),
                           "llmgw": facts(event.partial)}
                yield f"event: error\ndata: {dumps(payload)}\n\n"
                return
            else:  # the gateway speaks this dialect in WireEvents only
                raise FrontError(500, "internal_error", f"Unexpected stream event {event.type}.")
            event = await anext(events, None)
    except Exception as exc:
        payload = {**broken_stream(exc, stream_request_id(first), "anthropic"), }
        yield f"event: error\ndata: {dumps(payload)}\n\n"
    finally:  # a hang-up cancels us here: the gateway settles what was generated
        with anyio.CancelScope(shield=True):
            await events.aclose()
