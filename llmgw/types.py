"""Pydantic models at llmgw's public boundary: what goes in and what comes out."""

from __future__ import annotations

import math
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    field_validator,
    model_validator,
)

Role = Literal["system", "user", "assistant", "tool", "function", "developer"]
AttemptStatus = Literal["ok", "error", "cached", "refused", "partial"]

# What PostgreSQL (the strictest ledger) cannot store in text or json: a NUL, or a lone
# surrogate (not UTF-8). SQLite takes both, so without this check a request would pass on
# one database and fail after the provider was paid on the other.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Ids also refuse every other control character: they end up in reports, logs and keys.
_ID_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The ledger's id columns are VARCHAR(200) (llmgw/ledger/models.py).
ID_MAX_CHARS = 200
# Deeper JSON than this is not a caller's data but an attack on the recursion limit.
MAX_NESTING = 32


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored in every ledger database, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return ("contains a NUL character (\\x00)" if found.group() == "\x00"
            else "contains an unpaired surrogate (not valid UTF-8)")


def nested_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """The first string, dict key or float inside `value` (dicts, lists and tuples) that no
    ledger, provider or cache key can carry, as '<path> <why>'; None when all are fine.
    Other objects (e.g. a pydantic class as `response_format`) are left to LiteLLM."""
    if isinstance(value, str):
        why = text_problem(value)
        return f"{path} {why}" if why else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, not a finite number"
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_NESTING:
            return f"{path} is nested more than {MAX_NESTING} levels deep"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (why := text_problem(key)):
                return f"{path} has a key {key!r} that {why}"
            found = nested_problem(item, f"{path}[{key!r}]", depth + 1)
            if found:
                return found
    return None


class Message(BaseModel):
    """One chat message in the OpenAI shape; extra provider fields pass through."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _storable(self) -> Message:
        if (type(self.content) is str and self.name is None and self.tool_calls is None
                and self.tool_call_id is None and not self.model_extra):
            why = text_problem(self.content)  # most messages: one string to check
            if why:
                raise ValueError(f"content {why}")
            return self
        fields = {"content": self.content, "name": self.name, "tool_calls": self.tool_calls,
                  "tool_call_id": self.tool_call_id, **(self.model_extra or {})}
        for field, value in fields.items():
            if value is not None and (why := nested_problem(value, field)):
                raise ValueError(why)
        return self


def check_id_text(v: str) -> str:
    """`v` if it is printable, non-blank text; ValueError saying why not."""
    if not v.strip():
        raise ValueError("must not be blank")
    found = _ID_UNSAFE.search(v)
    if found is not None:
        raise ValueError(f"contains the control character {found.group()!r}; ids are "
                         f"printable text")
    return v


# An id as every ledger database stores it: text (never bytes or a number), 1-200 characters.
IdText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=ID_MAX_CHARS)]


class CompletionRequest(BaseModel):
    """A validated `complete()` call; built before any I/O so bad input writes nothing."""

    model_config = ConfigDict(extra="forbid")

    agent_id: IdText
    project_id: IdText
    messages: list[Message] = Field(min_length=1)
    agent_type: IdText | None = None
    model_group: IdText | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @cached_property
    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as plain dicts (unset fields left out), built once per request; do
        not mutate (pass a provider its own copy)."""
        return [m.model_dump(exclude_none=True) for m in self.messages]

    @field_validator("agent_id", "project_id", "agent_type", "model_group")
    @classmethod
    def _printable_id(cls, v: str | None) -> str | None:
        return None if v is None else check_id_text(v)

    @field_validator("messages")
    @classmethod
    def _messages_have_content(cls, v: list[Message]) -> list[Message]:
        for i, m in enumerate(v):
            if m.role in ("user", "system", "developer") and (m.content is None or m.content == ""):
                raise ValueError(f"messages[{i}] ({m.role}) has no content")
            if m.role == "tool" and not m.tool_call_id:
                raise ValueError(f"messages[{i}] (tool) needs tool_call_id")
            for j, call in enumerate(m.tool_calls or ()):
                fn = call.get("function") if isinstance(call, dict) else None
                if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]
                        and isinstance(fn.get("arguments", ""), str)):
                    raise ValueError(f"messages[{i}].tool_calls[{j}] needs a function with a "
                                     "name and its arguments as a JSON string")
        return v


class Usage(BaseModel):
    """Token counts as the serving provider reported them, in one shape for every dialect.

    `prompt_tokens` is every input token, cache reads and writes included (OpenAI's sense;
    Anthropic's `input_tokens` excludes both). `cached_tokens` are cache reads;
    `cache_write_tokens` are cache writes, of which `cache_write_1h_tokens` at the 1-hour TTL;
    `reasoning_tokens` are inside `completion_tokens` (OpenAI's and Anthropic's sense)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Attempt(BaseModel):
    """One try at one deployment: a retry, a fallback hop or the answer itself."""

    attempt: int
    model_group: str
    deployment: str | None = None
    provider: str | None = None
    model: str | None = None
    status: AttemptStatus
    error_class: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_micros: int = 0
    provider_details: dict[str, Any] | None = None  # e.g. ruvLLM's model_used and confidence
    # The per-token USD rates it was priced at (input, output, cache_read, cache_write,
    # cache_write_1h), exact decimal strings: a later price change never rewrites history.
    rates: dict[str, str] | None = None


class Completion(BaseModel):
    """The answer to `LLMGateway.complete`, with what it cost and where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    request_id: str
    content: str | None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage
    cost_micros: int
    model_group: str
    requested_group: str
    deployment: str | None
    provider: str | None
    model: str | None
    latency_ms: float
    cached: bool = False
    saved_micros: int = 0  # a cache hit: what the answer cost when it was first paid for
    attempts: list[Attempt] = Field(default_factory=list)
    # The answer in its dialect's own wire shape (an Anthropic message), as the provider sent
    # it; None for chat completions, whose shape `content` / `tool_calls` already are.
    body: dict[str, Any] | None = Field(default=None, repr=False)
    dialect: str = "chat"
    raw: Any = Field(default=None, exclude=True, repr=False)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern
    @property
    def cost_usd(self) -> float:
        """The cost in dollars, for display; `cost_micros` is the exact figure."""
        return self.cost_micros / 1_000_000


class ContentDelta(BaseModel):
    """A piece of the answer's text."""

    type: Literal["content"] = "content"
    text: str
    request_id: str | None = None  # the request's id (its ledger rows'), on every event


class ToolCallDelta(BaseModel):
    """A piece of a tool call: `name` comes first, `arguments` arrive in fragments."""

    type: Literal["tool_call"] = "tool_call"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    request_id: str | None = None


class WireEvent(BaseModel):
    """One event of a stream in its dialect's own wire shape (an Anthropic server-sent
    event), passed on as the provider sent it: `raw` holds its bytes as text."""

    type: Literal["wire"] = "wire"
    event: str
    data: dict[str, Any]
    raw: str = Field(default="", repr=False)
    request_id: str | None = None


class StreamDone(BaseModel):
    """The last event of a stream that finished: what it said, used and cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["done"] = "done"
    completion: Completion


class StreamError(BaseModel):
    """The last event of a stream that broke after its first token: no fallback can follow
    without repeating text. `partial` holds what was generated and what it cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["error"] = "error"
    error_class: str
    message: str
    partial: Completion
    error: Any = Field(default=None, exclude=True, repr=False)


StreamEvent = ContentDelta | ToolCallDelta | WireEvent | StreamDone | StreamError


class BudgetImpact(BaseModel):
    """How one budget would look if the request reserved its worst case now."""

    scope: str
    scope_id: str
    period: str
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    would_exceed: bool


class DeploymentEstimate(BaseModel):
    deployment: str
    model_group: str
    model: str
    expected_micros: int
    worst_case_micros: int


class CostEstimate(BaseModel):
    """What a request would cost, before it is made: no reservation, no provider call."""

    model_group: str
    fallback_groups: list[str]
    prompt_tokens: int
    expected_completion_tokens: int
    max_tokens: int
    worst_case_micros: int  # exactly what `complete` would reserve
    deployments: list[DeploymentEstimate]
    budgets: list[BudgetImpact]
    would_be_refused: bool
