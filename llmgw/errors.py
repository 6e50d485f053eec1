"""The typed errors of llmgw: one family tree, each message says what to do next.

LiteLLM's exceptions are translated into these in one place (`llmgw.routing.errors.map_exception`).
No message ever contains an API key: provider text is passed through `llmgw.redact` first.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmgw.types import Attempt


class LLMGatewayError(Exception):
    """Base class of every error llmgw raises."""

    # Set by the gateway once the request has an id (its ledger rows carry the same id).
    request_id: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class InvalidRequest(LLMGatewayError):
    """The call's arguments are malformed; nothing was sent and nothing was recorded."""


class ConfigError(LLMGatewayError):
    """The configuration file or environment is invalid; names the bad key."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        self.path = path
        self.key = key
        super().__init__(message, hint=hint)


class UnknownResponse(LLMGatewayError):
    """A `previous_response_id` (or a stored response asked for) that this project does not
    have: never made, made by another project, not stored (`store: false`) or expired."""

    def __init__(self, response_id: str) -> None:
        super().__init__(
            f"No stored response {response_id!r} for this project.",
            hint="Continue from a response this project made with `store` on (the default), "
                 "within llmgw.responses.retention_days; or send the whole conversation as "
                 "`input`.")
        self.response_id = response_id


class UnknownModelGroup(LLMGatewayError):
    """A model group was asked for that the configuration does not define."""

    def __init__(self, group: str, known: list[str]) -> None:
        self.group = group
        self.known = sorted(known)
        super().__init__(
            f"Unknown model group {group!r}.",
            hint=f"Known groups: {', '.join(self.known)}. Add it to model_list in model_list.yaml "
            "or pass one of these.",
        )


class BudgetExceeded(LLMGatewayError):
    """A budget would be exceeded by this request's worst-case cost; no provider was called."""

    def __init__(self, *, scope: str, scope_id: str, window: str, spent_micros: int,
                 reserved_micros: int, limit_micros: int, requested_micros: int,
                 resets_at: datetime | None) -> None:
        self.scope = scope
        self.scope_id = scope_id
        self.window = window
        self.spent_micros = spent_micros
        self.reserved_micros = reserved_micros
        self.limit_micros = limit_micros
        self.requested_micros = requested_micros
        self.resets_at = resets_at
        if window == "request":
            super().__init__(
                f"This request could cost up to ${requested_micros / 1e6:.6f}, over the "
                f"per-request cap of ${limit_micros / 1e6:.6f}.",
                hint="Lower max_tokens, shorten the prompt, or raise the cap with "
                     "`llmgw budgets set --per-request`.")
            return
        if scope == "session":
            super().__init__(
                f"Agent run (session {scope_id!r}) hit its cap: spent ${spent_micros / 1e6:.6f} "
                f"+ reserved ${reserved_micros / 1e6:.6f} + this request "
                f"${requested_micros / 1e6:.6f} > its cap ${limit_micros / 1e6:.6f} for the "
                "whole run (it never resets).",
                hint="Start a new run (a new session id), or raise the cap: llmgw.budgets.sessions "
                     f"in model_list.yaml or `llmgw budgets set --session {scope_id} --total-usd X`.")
            return
        resets = f"; it resets at {resets_at.isoformat()} UTC" if resets_at else ""
        super().__init__(
            f"Budget exceeded for {scope} {scope_id!r} ({window}): spent ${spent_micros / 1e6:.6f} "
            f"+ reserved ${reserved_micros / 1e6:.6f} + this request ${requested_micros / 1e6:.6f} "
            f"> limit ${limit_micros / 1e6:.6f}{resets}.",
            hint="Raise the limit with `llmgw budgets set`, lower max_tokens, or wait for the reset.",
        )


class LedgerError(LLMGatewayError):
    """The cost ledger could not be read or written."""

    # The answer a provider was paid for, when only its ledger write failed: kept, not lost.
    completion: Any = None


class ProviderError(LLMGatewayError):
    """A provider call failed; carries every attempt that was made for the request."""

    def __init__(self, message: str, *, hint: str | None = None, model_group: str | None = None,
                 deployment: str | None = None, provider: str | None = None,
                 status_code: int | None = None, request_id: str | None = None,
                 attempts: list[Attempt] | None = None) -> None:
        self.model_group = model_group
        self.deployment = deployment
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.attempts: list[Attempt] = list(attempts or [])
        super().__init__(message, hint=hint)


class RateLimited(ProviderError):
    """The provider rate-limited the request; `retry_after` says when to try again (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        kw.setdefault("hint", f"Retry after {retry_after:g} s." if retry_after is not None
                      else "Retry later or add a fallback group in router_settings.fallbacks.")
        super().__init__(message, **kw)  # ProviderError's keywords


class AuthenticationFailed(ProviderError):
    """The provider rejected the credentials (401/403); never fails over to another group."""


class ProviderUnavailable(ProviderError):
    """The provider is down, overloaded, timed out or unreachable."""


class ContextWindowExceeded(ProviderError):
    """The prompt does not fit the model's context window."""


class ProviderRejected(ProviderError):
    """The provider refused the request as malformed or not allowed (400, 404, content policy)."""


class AllDeploymentsFailed(ProviderError):
    """Every deployment tried for the request (retries and fallbacks) failed; see `attempts`."""
