"""Pydantic models of the front's OpenAI-shaped bodies and answers (they are its OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmgw.ledger.report import ReportRow
from llmgw.ledger.report_output import row_dict


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape; /v1/messages answers Anthropic's (`AnthropicError`)."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


class CalledFunction(BaseModel):
    name: str = Field(min_length=1)
    arguments: str


class MessageToolCall(BaseModel):
    """A tool call the assistant made, sent back in the conversation."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. cache_control

    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["image_url"]
    image_url: ImageUrl


class FileRef(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class FilePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One message, OpenAI's shape; provider-specific fields pass through."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionName(BaseModel):
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    function: FunctionName


# Fields of the body that are not parameters of the call itself.
_NOT_PARAMS = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata", "n",
                         "store"})


class ChatCompletionBody(BaseModel):
    """`POST /v1/chat/completions`. `model` is a model group, or `auto` / absent for the
    agent type's group. The project and agent come from the key, never from here."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "auto", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64},
        {"model": "auto", "messages": [{"role": "user", "content": "Hello"}], "user": "agent-1",
         "stream": True, "stream_options": {"include_usage": True}}]})

    model: str | None = Field(default=None, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: Literal[1] | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning_effort: str | None = None
    user: str | None = Field(default=None, max_length=200, description=(
        "the agent id, for an any-agent key (or header X-LLMGW-Agent)"))
    metadata: dict[str, str] | None = Field(default=None, description=(
        "kept in the ledger row's metadata"))
    store: bool | None = Field(default=None, description="accepted and ignored")

    def params(self) -> dict[str, Any]:
        """The sampling and tool parameters for the gateway (what LiteLLM passes on)."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items()
                if k not in _NOT_PARAMS}

    def message_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


class FunctionCall(BaseModel):
    name: str | None = None
    arguments: str = ""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Facts(BaseModel):
    """What the `x-llmgw-*` headers say; a stream's last event carries it as `llmgw`."""

    request_id: str
    cost_usd: str = Field(description="exact, 6 decimals")
    cost_micros: int
    model_group: str
    deployment: str | None = None
    cache: Literal["hit", "miss"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the model group that answered")
    choices: list[Choice]
    usage: CompletionUsage
    llmgw: Facts


class ModelCard(BaseModel):
    """OpenAI's model object, and the group the name resolves to (None for `auto`: the agent
    type's group). An alias's id is its key in llmgw.model_aliases, a pattern or a name."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llmgw"
    model_group: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AnthropicModel(BaseModel):
    """Anthropic's model object (`GET /v1/models` with an `anthropic-version` header)."""

    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str = "1970-01-01T00:00:00Z"  # RFC 3339, as Anthropic sends it


class AnthropicModelList(BaseModel):
    data: list[AnthropicModel]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class UsageRow(BaseModel):
    """One line of a usage report, as `llmgw usage report --format json` writes it."""

    key: str
    requests: int
    attempts: int
    errors: int
    cached: int
    refused: int
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = Field(description="Of prompt_tokens: read from the prompt cache.")
    cache_write_tokens: int = Field(description="Of prompt_tokens: written to the prompt cache.")
    cache_write_1h_tokens: int = Field(description="Of cache_write_tokens: at the 1-hour TTL.")
    reasoning_tokens: int = Field(description="Of completion_tokens: reasoning (thinking).")
    cost_micros: int
    cost_usd: str
    saved_micros: int
    saved_usd: str

    @classmethod
    def of(cls, row: ReportRow) -> UsageRow:
        return cls.model_validate(row_dict(row))


class UsageReport(BaseModel):
    """`llmgw usage report --format json`'s rows, and their total."""

    by: str
    project: str | None
    agent: str | None
    session: str | None = None
    since: str | None
    until: str | None
    rows: list[UsageRow]
    total: UsageRow


class Health(BaseModel):
    status: str
    detail: str | None = None
