"""The MCP tools' structured outputs (pydantic: the SDK publishes each as the tool's
`outputSchema`) and their builders from the gateway's own types. Money is integer
micro-dollars, with an exact dollar string beside it for people."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmgw.budgets.pricing import micros_to_usd
from llmgw.config.models import Config
from llmgw.ledger.report import ReportRow
from llmgw.server.schemas import UsageRow
from llmgw.types import Completion, CostEstimate


def usd(micros: int) -> str:
    """Exact dollars with six places, as text (a float would round)."""
    return format(micros_to_usd(micros), "f")


def per_million(price: Decimal) -> str:
    """Dollars per million tokens, exact (0.075 stays 0.075)."""
    text = format((price * 1_000_000).normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None,
                                              description="JSON schema of the arguments.")


class ToolSpec(BaseModel):
    """A tool the model may call, in OpenAI's shape."""

    model_config = ConfigDict(extra="allow")

    type: str = "function"
    function: ToolFunction


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


class ChatResult(BaseModel):
    """The answer, what it cost and where it came from."""

    content: str | None
    tool_calls: list[dict[str, Any]] = Field(
        description="OpenAI-shaped tool calls: id, type, function {name, arguments}.")
    finish_reason: str | None
    usage: TokenUsage
    cost_micros: int = Field(description="Exact cost in micro-dollars.")
    cost_usd: str = Field(description="The cost in dollars, exact, six decimals.")
    request_id: str = Field(description="The ledger's request id.")
    model_group: str = Field(description="The group that answered (after any fallback).")
    requested_group: str
    deployment: str | None
    provider: str | None
    model: str | None
    cached: bool
    latency_ms: float


def chat_result(c: Completion) -> ChatResult:
    u = c.usage
    return ChatResult(
        content=c.content, tool_calls=c.tool_calls, finish_reason=c.finish_reason,
        usage=TokenUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                         cached_tokens=u.cached_tokens, total_tokens=u.total_tokens),
        cost_micros=c.cost_micros, cost_usd=usd(c.cost_micros), request_id=c.request_id,
        model_group=c.model_group, requested_group=c.requested_group, deployment=c.deployment,
        provider=c.provider, model=c.model, cached=c.cached, latency_ms=round(c.latency_ms, 3))


class DeploymentInfo(BaseModel):
    id: str
    provider: str
    model: str
    input_usd_per_mtok: str = Field(description="Dollars per million prompt tokens.")
    output_usd_per_mtok: str = Field(description="Dollars per million completion tokens.")


class GroupInfo(BaseModel):
    name: str
    default: bool = Field(description="The group of calls that name no group or agent type.")
    fallbacks: list[str] = Field(description="Groups tried, in order, when this one fails.")
    agent_types: list[str] = Field(description="Agent types routed to this group.")
    deployments: list[DeploymentInfo]


class ModelsResult(BaseModel):
    groups: list[GroupInfo]


def models_result(config: Config) -> ModelsResult:
    fallbacks = config.router_settings.fallback_map()
    types = config.llmgw.agent_types
    return ModelsResult(groups=[GroupInfo(
        name=name, default=name == config.llmgw.default_group,
        fallbacks=list(fallbacks.get(name, [])),
        agent_types=sorted(t for t, g in types.items() if g == name),
        deployments=[DeploymentInfo(id=d.id, provider=d.provider, model=d.litellm_params.model,
                                    input_usd_per_mtok=per_million(d.input_price),
                                    output_usd_per_mtok=per_million(d.output_price))
                     for d in deployments])
        for name, deployments in config.groups().items()])


def usage_row(row: ReportRow) -> UsageRow:
    """As `llmgw usage report --format json` and `GET /v1/usage` write it."""
    return UsageRow.of(row)


class UsageResult(BaseModel):
    """The same figures as `llmgw usage report --format json`, for one project."""

    by: str
    project: str | None = Field(description="The project covered (None: every project; "
                                            "admin keys only).")
    since: str | None
    until: str | None
    rows: list[UsageRow]
    total: UsageRow


class EstimateResult(CostEstimate):
    """What a chat_completion would cost: `worst_case_micros` is exactly what it would hold
    against the budgets; `budgets` shows each one's room; nothing is reserved."""

    worst_case_usd: str


def estimate_result(e: CostEstimate) -> EstimateResult:
    return EstimateResult(**e.model_dump(), worst_case_usd=usd(e.worst_case_micros))


class TokenCount(BaseModel):
    model_group: str
    model: str = Field(description="The model whose tokenizer counted (the group's first).")
    prompt_tokens: int
