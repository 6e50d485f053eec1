"""`POST /v1/messages/count_tokens`: Anthropic's token counting, so the Anthropic SDK and the
coding agents built on it (which count before they send) can point their base URL at llmgw.

The body is a Messages request without max_tokens. The key names the project, the model names
the group (as for /v1/messages); llmgw.pipeline.count_tokens says which deployment counts and how. A
count is never charged: no reservation, no ledger row, no cache. Only what is read is
validated (model, messages, system, tools); every other field goes to the counter as sent."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmgw.ledger.api_keys import KeyInfo
from llmgw.pipeline.count_tokens import count_input_tokens
from llmgw.server.auth import caller_of
from llmgw.server.common import ERROR_STATUSES, group_of, require_key, until_disconnect
from llmgw.server.schemas import AnthropicError

router = APIRouter()
Key = Annotated[KeyInfo, Depends(require_key)]
SOURCE_HEADER = "x-llmgw-count-source"


class ContentBlock(BaseModel):
    """Any Anthropic content block (text, image, document, tool_use, thinking, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


class SystemBlock(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. cache_control

    type: Literal["text"]
    text: str


class CountedMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class CountedTool(BaseModel):
    """A client tool (name, input_schema) or a server tool (type, name): the name is read."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)


class CountTokensBody(BaseModel):
    """Anthropic's count_tokens request. `model` is a model group (or `auto`); the project and
    agent come from the key (an any-agent key: `metadata.user_id` or X-LLMGW-Agent)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "auto", "messages": [{"role": "user", "content": "Hello"}]}]})

    model: str = Field(min_length=1, max_length=200)
    messages: list[CountedMessage] = Field(min_length=1)
    system: str | list[SystemBlock] | None = None
    tools: list[CountedTool] | None = None


class CountTokensResponse(BaseModel):
    input_tokens: int = Field(ge=0)


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse, tags=["anthropic"],
             responses={s: {"model": AnthropicError} for s in ERROR_STATUSES})
async def count_tokens(body: CountTokensBody, request: Request, key: Key) -> JSONResponse:
    """The request's input tokens, counted by the group's first deployment (Anthropic's own
    endpoint for an Anthropic deployment, else LiteLLM's tokenizer); `x-llmgw-count-source`
    says which (`provider` or `tokenizer`). Free: nothing is charged or recorded."""
    raw = await request.json()  # the body as sent: what the counter gets
    caller = caller_of(key, request, anthropic_user_id=_user_id(raw))
    gateway = request.app.state.gateway
    route = gateway.agents.resolve(caller.agent_id, agent_type=caller.agent_type,
                                   model_group=group_of(body.model))
    counted = await until_disconnect(request, count_input_tokens(
        gateway.config, route.model_group, raw,
        anthropic_beta=request.headers.get("anthropic-beta")))
    return JSONResponse({"input_tokens": counted.input_tokens},
                        headers={SOURCE_HEADER: counted.source,
                                 "x-llmgw-model-group": counted.model_group,
                                 "x-llmgw-deployment": counted.deployment})


def _user_id(raw: dict[str, Any]) -> str | None:
    """`metadata.user_id`, if sent (count_tokens has no metadata of its own; it passes through)."""
    metadata = raw.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else None
