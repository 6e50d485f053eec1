"""`router_settings`: the keyword arguments of LiteLLM's `Router`, checked at load.

Every key is one of `litellm.Router.__init__`'s parameters, so a misspelt key fails here with
its path instead of as a `TypeError` when the gateway starts. The names and the value domains
below are copied from LiteLLM rather than imported: loading the config must not import
LiteLLM (seconds), as `llmgw usage` and `llmgw budgets` load it too.
tests/unit/test_router_settings_check.py keeps these copies equal to the installed LiteLLM.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator

ENV_PREFIX = "os.environ/"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_REDIS_SETTINGS = ("redis_url", "redis_host", "redis_port", "redis_password")

# litellm.router_utils.routing_groups.VALID_ROUTING_STRATEGIES
RoutingStrategy = Literal["simple-shuffle", "lar1", "least-busy", "latency-based-routing",
                          "cost-based-routing", "usage-based-routing-v2", "usage-based-routing",
                          "provider-budget-routing"]
# litellm.types.router.OptionalPreCallChecks
PreCallCheck = Literal["prompt_caching", "router_budget_limiting",
                       "responses_api_deployment_check", "deployment_affinity",
                       "session_affinity", "forward_client_headers_by_model_group",
                       "enforce_model_rate_limits", "encrypted_content_affinity"]

Count = Annotated[int, Strict(), Field(ge=0)]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Seconds = Annotated[float, Field(gt=0)]
FallbackList = list[dict[str, list[str]]]
FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")

# Router arguments a YAML file cannot give: llmgw passes its own, or they take Python objects.
_NOT_FROM_YAML = {
    "model_list": "deployments go in the top-level model_list, not under router_settings",
    "fallback_access_check": "llmgw sets it (no failover after an authentication failure)",
    "fallback_budget_check": "llmgw sets it (budgets are llmgw's, see llmgw.budgets)",
    "plugins": "it takes Python objects, which a YAML file cannot give",
    "alerting_config": "it takes a Python object, which a YAML file cannot give",
    "auto_router_capability_limit": "it takes a Python object, which a YAML file cannot give",
    "assistants_config": "LiteLLM's proxy feature; llmgw routes chat completions only",
    "search_tools": "LiteLLM's proxy feature; llmgw routes chat completions only",
    "ignore_invalid_deployments": "an invalid deployment must fail at load, not be skipped",
}


class RetryPolicy(BaseModel):
    """Retries per error type (litellm.types.router.RetryPolicy). llmgw never retries bad
    credentials or a request the provider refused as sent: those two must be 0 or absent."""

    model_config = ConfigDict(extra="forbid")

    BadRequestErrorRetries: Count | None = None
    AuthenticationErrorRetries: Count | None = None
    TimeoutErrorRetries: Count | None = None
    RateLimitErrorRetries: Count | None = None
    ContentPolicyViolationErrorRetries: Count | None = None
    InternalServerErrorRetries: Count | None = None
    ServiceUnavailableErrorRetries: Count | None = None
    NotFoundErrorRetries: Count | None = None
    DefaultRetries: Count | None = None

    @field_validator("BadRequestErrorRetries", "AuthenticationErrorRetries")
    @classmethod
    def _never_retried(cls, v: int | None) -> int | None:
        if v:
            raise ValueError("must be 0: llmgw never retries bad credentials or a request the "
                             "provider refused as sent (it would be a silent failover)")
        return v


class GeneralSettings(BaseModel):
    """`router_general_settings` (litellm.types.router.RouterGeneralSettings). llmgw turns
    `async_only_mode` on unless this says otherwise (llmgw.routing.router.LEAN_GENERAL_SETTINGS)."""

    model_config = ConfigDict(extra="forbid")

    async_only_mode: bool | None = None
    pass_through_all_models: bool | None = None


class AllowedFailsPolicy(BaseModel):
    """Failures per error type before a cooldown (litellm.types.router.AllowedFailsPolicy)."""

    model_config = ConfigDict(extra="forbid")

    BadRequestErrorAllowedFails: Count | None = None
    AuthenticationErrorAllowedFails: Count | None = None
    TimeoutErrorAllowedFails: Count | None = None
    RateLimitErrorAllowedFails: Count | None = None
    ContentPolicyViolationErrorAllowedFails: Count | None = None
    InternalServerErrorAllowedFails: Count | None = None
    ServiceUnavailableErrorAllowedFails: Count | None = None
    BadGatewayErrorAllowedFails: Count | None = None
    NotFoundErrorAllowedFails: Count | None = None


class RouterSettings(BaseModel):
    """LiteLLM's `router_settings`, passed to `litellm.Router` as keyword arguments.

    One field per `Router.__init__` parameter, in its order; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model_list: Any = None
    assistants_config: Any = None
    search_tools: Any = None
    guardrail_list: list[dict[str, Any]] | None = None
    # LiteLLM's shared Router state (cooldowns, latency, usage) across gateway processes.
    # Values may be `os.environ/NAME` references; `LLMGW_REDIS_URL` overrides redis_url.
    redis_url: str | None = Field(default=None, min_length=1)
    redis_host: str | None = Field(default=None, min_length=1)
    redis_port: int | str | None = None
    redis_password: str | None = None
    redis_db: Count | None = None
    cache_responses: bool | None = None
    cache_kwargs: dict[str, Any] | None = None
    caching_groups: list[list[str]] | None = None
    client_ttl: PositiveInt | None = None
    polling_interval: Seconds | None = None
    default_priority: Count | None = None
    num_retries: Count | None = None
    max_fallbacks: Count | None = None
    timeout: Seconds | None = None
    stream_timeout: Seconds | None = None
    default_litellm_params: dict[str, Any] | None = None
    default_max_parallel_requests: PositiveInt | None = None
    set_verbose: bool | None = None
    debug_level: Literal["DEBUG", "INFO"] | None = None
    default_fallbacks: list[str] | None = None
    fallbacks: FallbackList = Field(default_factory=list)
    context_window_fallbacks: FallbackList = Field(default_factory=list)
    content_policy_fallbacks: FallbackList = Field(default_factory=list)
    model_group_alias: dict[str, str | dict[str, Any]] | None = None
    enable_pre_call_checks: bool | None = None
    enable_tag_filtering: bool | None = None
    tag_filtering_match_any: bool | None = None
    tag_routing_prefix: str | None = None
    plugins: Any = None
    retry_after: Annotated[float, Field(ge=0)] | None = None
    retry_policy: RetryPolicy | None = None
    model_group_retry_policy: dict[str, RetryPolicy] | None = None
    allowed_fails: Count | None = None
    allowed_fails_policy: AllowedFailsPolicy | None = None
    cooldown_time: Annotated[float, Field(ge=0)] | None = None
    disable_cooldowns: bool | None = None
    routing_strategy: RoutingStrategy = "simple-shuffle"
    optional_pre_call_checks: list[PreCallCheck] | None = None
    routing_strategy_args: dict[str, Any] | None = None
    routing_groups: list[dict[str, Any]] | None = None
    provider_budget_config: dict[str, Any] | None = None
    alerting_config: Any = None
    router_general_settings: GeneralSettings | None = None
    deployment_affinity_ttl_seconds: PositiveInt | None = None
    model_group_affinity_config: dict[str, list[str]] | None = None
    ignore_invalid_deployments: Any = None
    enable_health_check_routing: bool | None = None
    health_check_staleness_threshold: PositiveInt | None = None
    health_check_ignore_transient_errors: bool | None = None
    background_health_check_model_groups: list[str] | None = None
    enable_weighted_failover: bool | None = None
    fallback_access_check: Any = None
    fallback_budget_check: Any = None
    auto_router_capability_limit: Any = None

    @field_validator(*_NOT_FROM_YAML)
    @classmethod
    def _not_from_yaml(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None:
            raise ValueError(f"not accepted here: {_NOT_FROM_YAML.get(info.field_name or '')}")
        return v

    @field_validator("cooldown_time")
    @classmethod
    def _cooldown_not_zero(cls, v: float | None) -> float | None:
        # LiteLLM reads 0 as its default (`cooldown_time or DEFAULT`), not as "no cooldown".
        if v == 0:
            raise ValueError("0 would mean LiteLLM's default cooldown, not none; set "
                             "disable_cooldowns: true to turn cooldowns off")
        return v

    @field_validator("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
    @classmethod
    def _one_group_per_entry(cls, entries: FallbackList) -> FallbackList:
        for i, entry in enumerate(entries):
            if len(entry) != 1:
                raise ValueError(f"[{i}] has {len(entry)} keys; write one group per entry "
                                 "(- group: [fallback, ...])")
        return entries

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(ENV_PREFIX) and urlsplit(v).scheme not in _REDIS_SCHEMES:
            raise ValueError("expected redis://[:password@]host:port/db, rediss://... or "
                             "unix://..., or an os.environ/NAME reference")
        return v

    def router_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `litellm.Router`, `os.environ/` references resolved."""
        kwargs = self.model_dump(exclude_none=True)
        for name in _REDIS_SETTINGS:
            value = kwargs.get(name)
            if isinstance(value, str) and value.startswith(ENV_PREFIX):
                resolved = os.environ.get(value[len(ENV_PREFIX):])
                if resolved is None:
                    kwargs.pop(name)
                else:
                    kwargs[name] = int(resolved) if name == "redis_port" else resolved
        return kwargs

    def shared_state_url(self) -> str | None:
        """The Redis the Router shares its state through, as a URL; None when per process."""
        kwargs = self.router_kwargs()
        if kwargs.get("redis_url"):
            return str(kwargs["redis_url"])
        if kwargs.get("redis_host") and kwargs.get("redis_port"):
            password = kwargs.get("redis_password")
            auth = f":{quote(str(password), safe='')}@" if password else ""
            return f"redis://{auth}{kwargs['redis_host']}:{kwargs['redis_port']}"
        return None

    def redis_secrets(self) -> list[str]:
        """The Redis password, however it is given, so it can be scrubbed from any text."""
        kwargs = self.router_kwargs()
        found = [str(kwargs.get("redis_password") or "")]
        url = kwargs.get("redis_url")
        if url:
            found.append(urlsplit(url).password or "")
        return [s for s in found if s]

    def fallback_map(self, kind: str = "fallbacks") -> dict[str, list[str]]:
        """Group -> its fallback groups for one kind of fallback (`fallbacks`,
        `context_window_fallbacks`, `content_policy_fallbacks`); `*` applies to every group.
        For `fallbacks`, `default_fallbacks` is folded in under `*`, as LiteLLM does."""
        merged: dict[str, list[str]] = {}
        for entry in getattr(self, kind):
            for group, targets in entry.items():
                merged.setdefault(group, []).extend(targets)
        if kind == "fallbacks" and self.default_fallbacks:
            merged.setdefault("*", []).extend(self.default_fallbacks)
        return merged

    def referenced_groups(self) -> list[tuple[str, str]]:
        """(key path, group name) for every model group these settings name."""
        refs: list[tuple[str, str]] = []
        for kind in FALLBACK_KINDS:
            for i, entry in enumerate(getattr(self, kind)):
                for group, targets in entry.items():
                    refs += [(f"router_settings.{kind}[{i}]", g) for g in [group, *targets]
                             if g != "*"]
        refs += [("router_settings.default_fallbacks", g) for g in self.default_fallbacks or []]
        refs += [("router_settings.model_group_retry_policy", g)
                 for g in self.model_group_retry_policy or {}]
        for alias, target in (self.model_group_alias or {}).items():
            name = target if isinstance(target, str) else target.get("model")
            refs.append((f"router_settings.model_group_alias.{alias}", str(name)))
        refs += [("router_settings.background_health_check_model_groups", g)
                 for g in self.background_health_check_model_groups or []]
        return refs
