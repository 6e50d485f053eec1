"""`model_list.yaml`'s models: LiteLLM's own config format plus our `llmgw:` section.

Validation lives in the models, so a bad file fails at load (`llmgw.config.loading`), with the
key path and what was expected, never at the first request.
"""

from __future__ import annotations

import difflib
import os
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmgw.config.router_settings import ENV_PREFIX, FALLBACK_KINDS, Count, PositiveInt, RouterSettings

DEFAULT_LEDGER_URL = "sqlite:///llmgw.db"
_SECRET_PARAM_HINTS = ("key", "secret", "token", "password", "credential")
# LiteLLM 1.106.2 cannot parse Cohere's v2 SSE stream (it json-decodes the `event:` lines);
# with fake_stream it makes a plain call and replays the answer as a stream.
_FAKE_STREAM_PROVIDERS = frozenset({"cohere", "cohere_chat"})


# Bounds on what a person can mean: past them a value is a typo (or an exponent) that would
# overflow the ledger's integer micro-dollars or a timer, far from the first request.
MAX_BUDGET_USD = Decimal(1_000_000_000)
MAX_PRICE_PER_TOKEN = Decimal(1)
MAX_TIMEOUT_S = 86_400.0
MAX_MAX_TOKENS = 10_000_000

Price = Annotated[Decimal, Field(ge=0, le=MAX_PRICE_PER_TOKEN)]
Usd = Annotated[Decimal, Field(ge=0, le=MAX_BUDGET_USD)]
TokenCount = Annotated[int, Strict(), Field(gt=0, le=MAX_MAX_TOKENS)]
_URL_SCHEMES = ("http", "https")


class ModelInfo(BaseModel):
    """LiteLLM's `model_info`; we require a readable `id` (generated if absent) and prices."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    id: str | None = Field(default=None, min_length=1)
    input_cost_per_token: Price | None = None
    output_cost_per_token: Price | None = None
    max_tokens: TokenCount | None = None
    max_input_tokens: TokenCount | None = None
    max_output_tokens: TokenCount | None = None


class LiteLLMParams(BaseModel):
    """LiteLLM's `litellm_params`, passed to the Router as written; the values with a known
    domain are checked (LiteLLM resolves `os.environ/NAME` in the ones typed `| str`)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(min_length=1)
    api_key: str | None = None
    api_base: str | None = None
    input_cost_per_token: Price | None = None
    output_cost_per_token: Price | None = None
    timeout: float | str | None = None
    stream_timeout: float | str | None = None
    max_retries: int | str | None = None
    rpm: Count | None = None
    tpm: Count | None = None
    max_parallel_requests: PositiveInt | None = None
    order: PositiveInt | None = None
    weight: Annotated[float, Field(ge=0)] | None = None

    @field_validator("timeout", "stream_timeout", "max_retries", mode="before")
    @classmethod
    def _number_or_env(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or (isinstance(v, str) and v.startswith(ENV_PREFIX)):
            return v
        if info.field_name == "max_retries":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError("expected a whole number >= 0 or an os.environ/NAME reference")
        elif isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= MAX_TIMEOUT_S:
            raise ValueError(f"expected seconds above 0 and at most {MAX_TIMEOUT_S:.0f}, or an "
                             "os.environ/NAME reference")
        return v

    @field_validator("api_base")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(ENV_PREFIX) and (
                urlsplit(v).scheme not in _URL_SCHEMES or not urlsplit(v).netloc):
            raise ValueError("expected an http:// or https:// URL such as "
                             "http://127.0.0.1:8089/v1, or an os.environ/NAME reference")
        return v


class Deployment(BaseModel):
    """One entry of `model_list`: a deployment serving the model group `model_name`."""

    model_config = ConfigDict(extra="allow")

    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)

    @property
    def id(self) -> str:
        assert self.model_info.id is not None  # set by Config validation
        return self.model_info.id

    @property
    def provider(self) -> str:
        """The LiteLLM provider prefix (`anthropic/claude-...` -> `anthropic`)."""
        model = self.litellm_params.model
        return model.split("/", 1)[0] if "/" in model else "openai"

    @property
    def input_price(self) -> Decimal:
        return _first_price(self.model_info.input_cost_per_token,
                            self.litellm_params.input_cost_per_token)

    @property
    def output_price(self) -> Decimal:
        return _first_price(self.model_info.output_cost_per_token,
                            self.litellm_params.output_cost_per_token)

    def api_key_env(self) -> str | None:
        """The environment variable the api_key comes from, if it is an `os.environ/` reference."""
        key = self.litellm_params.api_key
        return key[len(ENV_PREFIX):] if key and key.startswith(ENV_PREFIX) else None

    def to_litellm(self) -> dict[str, Any]:
        """The deployment as LiteLLM's Router expects it, with prices as floats in model_info."""
        data = self.model_dump(mode="python", exclude_none=True)
        params = data["litellm_params"]
        params.pop("input_cost_per_token", None)
        params.pop("output_cost_per_token", None)
        if self.provider in _FAKE_STREAM_PROVIDERS:
            params.setdefault("fake_stream", True)
        info = data.setdefault("model_info", {})
        info["id"] = self.id
        info["input_cost_per_token"] = float(self.input_price)
        info["output_cost_per_token"] = float(self.output_price)
        from llmgw.budgets.rates import litellm_model_info

        for key, value in litellm_model_info(self).items():  # no token kind priced at $0
            info.setdefault(key, value)
        return data


def _first_price(*values: Decimal | None) -> Decimal:
    for v in values:
        if v is not None:
            return v
    raise ValueError("price missing")  # unreachable after validation


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = DEFAULT_LEDGER_URL
    # PostgreSQL: a gateway process's transactions use at most pool_size + max_overflow
    # connections (its reads another pool of that size, rarely more than one or two in use);
    # the server's max_connections must cover every process and the CLI. Ignored for SQLite.
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)


class BudgetLimits(BaseModel):
    """Limits for one key (a project, an agent, an agent type, or everything)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None
    warn_at: float | None = Field(default=None, gt=0, le=1)
    downgrade_to: str | None = Field(default=None, min_length=1,
                                     description="past warn_at, route to this cheaper group")


class SessionLimits(BaseModel):
    """The cap on one agent run (a session id), for the whole run: it never resets."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    total_usd: Usd
    warn_at: float | None = Field(default=None, gt=0, le=1)


class BudgetSettings(BaseModel):
    """`llmgw.budgets`: defaults; `llmgw budgets set` stores overrides in the database.
    `"*"` under projects/agents/agent_types/sessions applies to every id without its own
    entry (each with its own counter)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    timezone: str = "UTC"
    warn_at: float = Field(default=0.8, gt=0, le=1)
    default_max_tokens: int = Field(default=4096, gt=0, le=MAX_MAX_TOKENS,
                                    description="sent when a call gives no max_tokens, so the "
                                                "reservation bounds what the call can cost")
    prompt_margin: float = Field(default=1.1, ge=1.0, le=10.0,
                                 description="headroom on our prompt-token count for provider "
                                             "tokenizers that count more")
    per_request_usd: Usd | None = None
    global_: BudgetLimits | None = Field(default=None, alias="global")
    projects: dict[str, BudgetLimits] = Field(default_factory=dict)
    agents: dict[str, BudgetLimits] = Field(default_factory=dict)
    agent_types: dict[str, BudgetLimits] = Field(default_factory=dict)
    # Per agent run: a request that names a session is held against its run's total too.
    sessions: dict[str, SessionLimits] = Field(default_factory=dict)
    reconcile_after_s: float = Field(default=900.0, ge=0, le=MAX_TIMEOUT_S,
                                     description="an open reservation older than this was left "
                                                 "by a crash")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as "
                             "'UTC' or 'Europe/Paris')") from None
        return v


class SemanticSettings(BaseModel):
    """`llmgw.cache.semantic` (extra `llmgw[semantic]`): nearest-neighbour hits on the last
    user message, per scope, never for calls with tools."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    threshold: float = Field(default=0.92, gt=0, le=1, description="cosine similarity")
    max_entries: int = Field(default=10_000, gt=0)


class CacheSettings(BaseModel):
    """`llmgw.cache`: answers served again for the same question, never across scopes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: Literal["memory", "redis", "none"] = "memory"
    url: str | None = Field(default=None, description="redis://host:port/db for backend redis")
    ttl_s: float = Field(default=3600, gt=0, le=366 * MAX_TIMEOUT_S)
    max_entries: int = Field(default=10_000, gt=0, description="memory backend: LRU bound")
    scope: Literal["project", "agent_type", "global"] = "project"
    # Which calls are cached. An explicit temperature above 0 asks for variety: not cached
    # unless this is raised. Tool calls and streams are cached (a stream hit is replayed).
    max_temperature: float = Field(default=0.0, ge=0)
    tool_calls: bool = True
    streams: bool = True
    semantic: SemanticSettings | None = None


class MetricsSettings(BaseModel):
    """`llmgw.metrics`: a Prometheus endpoint per gateway process (`/metrics`).
    `LLMGW_METRICS_PORT` turns it on with that port (one port per process on a host)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1,
                      description="0.0.0.0 to let a Prometheus on another host scrape it")
    port: int = Field(default=9464, ge=0, lt=65536, description="0: any free port")


class OtelSettings(BaseModel):
    """`llmgw.otel`: OpenTelemetry traces (`pip install 'llmgw[otel]'`). One `llmgw.request`
    span per call; LiteLLM's own spans (one per attempt) are its children."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    exporter: Literal["otlp_http", "otlp_grpc", "console"] = "otlp_http"
    endpoint: str | None = Field(default=None, description=(
        "the collector's base URL (http://collector:4318; gRPC: collector:4317), as "
        "OTEL_EXPORTER_OTLP_ENDPOINT takes it; unset: that variable or the exporter's default"))
    service_name: str = Field(default="llmgw", min_length=1)
    capture_content: bool = Field(default=False, description=(
        "put prompts and answers in LiteLLM's spans; off, spans carry sizes, not text"))


class AgentTypeRouting(BaseModel):
    """The mapping form of an `llmgw.agent_types` entry: its group and per-call defaults
    (`complete(..., max_cost_usd=, prefer=)` override them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    group: str = Field(min_length=1)
    max_cost_usd: Decimal | None = Field(default=None, gt=0)
    prefer: Literal["cheapest", "fastest"] | None = None

    def defaults(self) -> dict[str, Any]:
        return {"max_cost_usd": self.max_cost_usd, "prefer": self.prefer}


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_queue_wait_s: float = Field(default=10.0, ge=0, description=(
        "how long a call waits for capacity when every deployment it may use is at its "
        "rpm/tpm/max_parallel_requests limit, before RateLimited"))


class ResponsesSettings(BaseModel):
    """`llmgw.responses`: the Responses API's stored responses (`previous_response_id`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    retention_days: float = Field(default=30.0, gt=0, le=3650, description=(
        "how long a stored response (store: true) can be continued from or fetched"))


class KeyLimitSettings(BaseModel):
    """One `llmgw.key_limits` entry: the limits of an API key of that agent type that sets none
    of its own (`llmgw keys create --rpm/--tpm/--max-parallel`); "*" is every other type's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rpm: int | None = Field(default=None, gt=0, description="requests per wall-clock minute")
    tpm: int | None = Field(default=None, gt=0, description=(
        "tokens per wall-clock minute, counted when a request is admitted: its prompt estimate "
        "plus its max tokens"))
    max_parallel: int | None = Field(default=None, gt=0, description="requests in flight at once")


class GatewaySettings(BaseModel):
    """Our own section, `llmgw:`. Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    default_group: str = Field(min_length=1)
    # agent type -> group, or {group, max_cost_usd, prefer}; read through `agent_type_groups`
    agent_types: dict[str, str | AgentTypeRouting] = Field(default_factory=dict)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    agents: dict[str, str] = Field(default_factory=dict, description="agent_id -> agent type")
    model_aliases: dict[str, str] = Field(default_factory=dict, description=(
        "client model name or fnmatch pattern (claude-*haiku*) -> model group; an exact group "
        "name always wins, then the patterns in file order (llmgw.config.aliases)"))
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    key_limits: dict[str, KeyLimitSettings] = Field(default_factory=dict, description=(
        "agent type (or '*') -> default rpm/tpm/max_parallel of its API keys; a key's own "
        "limits win, field by field (llmgw.server.key_limits)"))
    request_timeout_s: float = Field(default=600.0, gt=0, le=MAX_TIMEOUT_S)
    lean_litellm: bool = Field(default=True, description=(
        "LiteLLM's Router without per-call work that changes nothing a user sees "
        "(llmgw.routing.router.LEAN_GENERAL_SETTINGS, llmgw._litellm.lean_router_class); false: the "
        "Router exactly as LiteLLM ships it"))
    gc_freeze: bool | None = Field(default=None, description=(
        "freeze start-up's objects out of Python's cyclic GC (llmgw.heap); None: only in "
        "llmgw's own processes (serve, mcp, the CLI), never in a host application's"))

    def agent_type_groups(self) -> dict[str, str]:
        """Agent type -> its model group, whichever form its entry has."""
        return {t: v if isinstance(v, str) else v.group for t, v in self.agent_types.items()}

    def agent_type_defaults(self, agent_type: str | None) -> dict[str, Any] | None:
        """The per-call routing defaults of an agent type (mapping form), or None."""
        entry = self.agent_types.get(agent_type) if agent_type else None
        return entry.defaults() if isinstance(entry, AgentTypeRouting) else None


class Config(BaseModel):
    """The whole file. Top-level keys LiteLLM's proxy uses (litellm_settings, ...) are kept."""

    model_config = ConfigDict(extra="allow")

    model_list: list[Deployment] = Field(min_length=1)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    llmgw: GatewaySettings

    _source: str = PrivateAttr(default="<dict>")
    # Indexes built once at validation: the gateway consults them on every request.
    _groups: dict[str, list[Deployment]] = PrivateAttr(default_factory=dict)
    _by_id: dict[str, Deployment] = PrivateAttr(default_factory=dict)
    _chains: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_misspelt_section(cls, data: Any) -> Any:
        # Other top-level keys are LiteLLM's (litellm_settings, ...) and kept; one that is
        # nearly ours is a typo that would silently drop the whole section.
        if isinstance(data, dict):
            for key in data:
                close = difflib.get_close_matches(str(key), list(cls.model_fields), n=1,
                                                  cutoff=0.8)
                if close and key not in cls.model_fields:
                    raise ValueError(f"{key}: unknown top-level key; did you mean {close[0]!r}?")
        return data

    @field_validator("model_list")
    @classmethod
    def _ids_and_prices(cls, deployments: list[Deployment]) -> list[Deployment]:
        seen: dict[str, int] = {}
        for i, d in enumerate(deployments):
            for side in ("input", "output"):
                if (getattr(d.model_info, f"{side}_cost_per_token") is None
                        and getattr(d.litellm_params, f"{side}_cost_per_token") is None):
                    raise ValueError(
                        f"[{i}].model_info.{side}_cost_per_token is missing for "
                        f"{d.litellm_params.model!r}: set its price per token "
                        "(0 for local models); an unpriced model would be recorded as free")
            if d.model_info.id is None:
                base = f"{d.model_name}:{d.litellm_params.model}"
                n = sum(1 for k in seen if k == base or k.startswith(base + "#"))
                d.model_info.id = base if n == 0 else f"{base}#{n + 1}"
            if d.model_info.id in seen:
                raise ValueError(f"[{i}].model_info.id {d.model_info.id!r} repeats "
                                 f"model_list[{seen[d.model_info.id]}]; ids must be unique")
            seen[d.model_info.id] = i
        return deployments

    @model_validator(mode="after")
    def _references_exist(self) -> Config:
        groups = self.groups()
        known = ", ".join(sorted(groups))
        s = self.llmgw
        if s.default_group not in groups:
            raise ValueError(f"llmgw.default_group {s.default_group!r} is not a model group "
                             f"(known: {known})")
        for agent_type, group in s.agent_type_groups().items():
            if group not in groups:
                raise ValueError(f"llmgw.agent_types.{agent_type} -> {group!r} is not a model "
                                 f"group (known: {known})")
        for alias, group in s.model_aliases.items():
            if group not in groups:
                raise ValueError(f"llmgw.model_aliases.{alias} -> {group!r} is not a model "
                                 f"group (known: {known})")
            if alias in groups:
                raise ValueError(f"llmgw.model_aliases.{alias}: {alias!r} is a model group "
                                 "itself, and a group's own name always wins: remove the alias")
        for agent_type, limits in s.budgets.agent_types.items():
            if limits.downgrade_to and limits.downgrade_to not in groups:
                raise ValueError(f"llmgw.budgets.agent_types.{agent_type}.downgrade_to -> "
                                 f"{limits.downgrade_to!r} is not a model group (known: {known})")
        for key, name in self.router_settings.referenced_groups():
            if name not in groups:
                raise ValueError(f"{key}: {name!r} is not a model group (known: {known})")
        return self

    # -- queries -------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self._source

    # These run on every request: they read the private caches from `__pydantic_private__`
    # directly: pydantic's own attribute lookup for them costs more than the work itself.

    def groups(self) -> dict[str, list[Deployment]]:
        """Model group -> its deployments, in file order (do not mutate)."""
        groups: dict[str, list[Deployment]] = self.__pydantic_private__["_groups"]  # type: ignore[index]  # set: PrivateAttrs
        if not groups:
            for d in self.model_list:
                groups.setdefault(d.model_name, []).append(d)
        return groups

    def deployment(self, deployment_id: str) -> Deployment | None:
        by_id: dict[str, Deployment] = self.__pydantic_private__["_by_id"]  # type: ignore[index]  # set: PrivateAttrs
        if not by_id:
            by_id.update((d.id, d) for d in self.model_list)
        return by_id.get(deployment_id)

    def fallback_chain(self, group: str) -> list[str]:
        """`group` followed by every group its fallbacks can reach, in order, once each:
        through `fallbacks` (and `default_fallbacks`), `context_window_fallbacks` and
        `content_policy_fallbacks`, `*` entries included, transitively. A superset of what
        LiteLLM may try for one request, so a worst case priced over it is a bound."""
        chains: dict[str, list[str]] = self.__pydantic_private__["_chains"]  # type: ignore[index]  # set: PrivateAttrs
        chain = chains.get(group)
        if chain is None:
            chain = chains[group] = self._walk_fallbacks(group)
        return chain

    def _walk_fallbacks(self, group: str) -> list[str]:
        maps = [self.router_settings.fallback_map(kind) for kind in FALLBACK_KINDS]
        chain, todo = [], [group]
        while todo:
            g = todo.pop(0)
            if g in chain:
                continue
            chain.append(g)
            for fb in maps:
                todo.extend(fb.get(g, []) + fb.get("*", []))
        return chain

    def secret_values(self) -> list[str]:
        """Every credential the config names, resolved, so it can be scrubbed from any text."""
        secrets: list[str] = []
        for d in self.model_list:
            for name, value in d.litellm_params.model_dump().items():
                if not isinstance(value, str) or not any(h in name for h in _SECRET_PARAM_HINTS):
                    continue
                if value.startswith(ENV_PREFIX):
                    value = os.environ.get(value[len(ENV_PREFIX):], "")
                if len(value) >= 6:
                    secrets.append(value)
        return secrets + self.router_settings.redis_secrets()
