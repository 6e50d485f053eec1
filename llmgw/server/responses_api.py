"""`POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API (JSON, and its SSE
event sequence), so Codex, the OpenAI Agents SDK and the Vercel AI SDK's default provider can
point their base URL at llmgw.

A thin front over `LLMGateway.responses`: the events are what LiteLLM's Router passed on
(native for OpenAI deployments, its chat bridge for the others); llmgw's facts ride in the
`x-llmgw-*` headers, the JSON answer's `llmgw` and the `response.completed` event. A WebSocket
on `GET /v1/responses` (Codex tries one when a provider offers it) is refused at once, so the
client falls back to SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request, WebSocket
from fastapi.responses import JSONResponse

from llmgw.dialects.responses import ResponsesRequest
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
from llmgw.server.schemas import ErrorResponse
from llmgw.types import StreamDone, StreamError, StreamEvent, WireEvent

router = APIRouter()
Key = Annotated[KeyInfo, Depends(require_key)]
# Codex's per-turn header: a JSON object whose `session_id` names the agent run.
CODEX_TURN_HEADER = "x-codex-turn-metadata"


@router.post("/v1/responses", tags=["openai"],
             responses={**{s: {"model": ErrorResponse} for s in ERROR_STATUSES},
                        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "A response object (JSON), or its SSE events "
                                             "when stream"}})
async def create_response(body: Annotated[ResponsesRequest, Body()], request: Request,
                          key: Key) -> Any:
    """OpenAI's Responses API over the gateway. Fields llmgw does not read go on as sent."""
    raw = await request.json()  # the body as sent
    user = raw.get("user") if isinstance(raw.get("user"), str) else None
    caller = caller_of(key, request, user=user)
    gateway = request.app.state.gateway
    call = dict(agent_type=caller.agent_type,
                session_id=caller.session_id or codex_session(request),
                end_user=caller.end_user)
    async with key_pass(request, caller, dialect="responses", stream=bool(body.stream)) as held:
        if not body.stream:
            completion = await until_disconnect(request, gateway.responses(
                caller.agent_id, caller.project_id, raw, **call))
            answer = {**(completion.body or {}), "llmgw": facts(completion)}
            return JSONResponse(answer, headers=fact_headers(completion))
        events = held.wrap(gateway.responses_stream(caller.agent_id, caller.project_id, raw,
                                                    **call))
        try:  # up to the first event, a failure is still an HTTP status
            first = await until_disconnect(request, anext(events))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await events.aclose()
            raise
    return SSEResponse(_sse(first, events), request_id=stream_request_id(first))


@router.get("/v1/responses/{response_id}", tags=["openai"],
            responses={s: {"model": ErrorResponse} for s in (401, 403, 404)})
async def get_response(response_id: str, request: Request, key: Key) -> Any:
    """A response this key's project stored; any other id (another project's too) is 404."""
    if key.admin or key.project_id is None:
        raise FrontError(403, "project_key_required",
                         "Stored responses belong to a project: use that project's key.")
    return JSONResponse(await request.app.state.gateway.stored_response(key.project_id,
                                                                        response_id))


@router.websocket("/v1/responses")
async def refuse_websocket(websocket: WebSocket) -> None:
    """No WebSocket transport here: refused before the handshake (HTTP 403), so a client
    falls back to SSE at once."""
    await websocket.close(code=1008, reason="llmgw serves /v1/responses over HTTP and SSE only")


def codex_session(request: Request) -> str | None:
    """The agent run Codex names in its per-turn metadata header, if it sent one."""
    raw = request.headers.get(CODEX_TURN_HEADER)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    session = value.get("session_id") if isinstance(value, dict) else None
    return session if isinstance(session, str) and 0 < len(session) <= 200 else None


async def _sse(first: StreamEvent, events: AsyncGenerator[StreamEvent, None]) -> AsyncIterator[str]:
    """The events as they came, but `response.completed`, which waits for the settled facts
    and carries them as `llmgw`; a break ends with an `error` event."""
    held: WireEvent | None = None
    event: StreamEvent | None = first
    try:
        while event is not None:
            if isinstance(event, WireEvent):
                if event.event == "response.completed":
                    held = event
                else:
                    yield event.raw or f"event: {event.event}\ndata: {dumps(event.data)}\n\n"
            elif isinstance(event, StreamDone):
                done = {**(held.data if held is not None else {
                    "type": "response.completed", "response": event.completion.body or {}}),
                    "llmgw": facts(event.completion)}
                yield f"event: response.completed\ndata: {dumps(done)}\n\n"
                return
            elif isinstance(event, StreamError):
                payload = {**stream_error_payload(event.error, event.message, "openai"),
                           "type": "error", "llmgw": facts(event.partial)}
                yield f"event: error\ndata: {dumps(payload)}\n\n"
                return
            else:
                raise FrontError(500, "internal_error", f"Unexpected stream event {event.type}.")
            event = await anext(events, None)
    except Exception as exc:
        payload = {**broken_stream(exc, stream_request_id(first), "openai"), "type": "error", }
        yield f"event: error\ndata: {dumps(payload)}\n\n"
    finally:  # a hang-up cancels us here: the gateway settles what was generated
        with anyio.CancelScope(shield=True):
            await events.aclose()
