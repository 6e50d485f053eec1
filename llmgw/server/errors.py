"""Errors over HTTP: one table from llmgw's typed errors to a status and a code, rendered in
OpenAI's shape (`{"error": {message, type, code, param}}`) or Anthropic's
(`{"type": "error", "error": {type, message}}`) as the endpoint speaks.

The provider refusing *our* credentials is a 502, never a 401: a 401 would tell the caller
its own key is wrong."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from fastapi.responses import JSONResponse

from llmgw.errors import (
    AllDeploymentsFailed,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    ContextWindowExceeded,
    InvalidRequest,
    LedgerError,
    LLMGatewayError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    UnknownModelGroup,
    UnknownResponse,
)
from llmgw.ids import new_request_id

Api = Literal["openai", "anthropic"]

log = logging.getLogger("llmgw.server")


class FrontError(Exception):
    """A refusal of the front itself (key, scope, body): nothing reached the gateway."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Kind:
    status: int
    code: str
    openai_type: str
    anthropic_type: str


# Most specific first: the first class the error is an instance of decides.
_TABLE: tuple[tuple[type[LLMGatewayError], _Kind], ...] = (
    (InvalidRequest, _Kind(400, "invalid_request", "invalid_request_error",
                           "invalid_request_error")),
    (UnknownModelGroup, _Kind(404, "model_not_found", "invalid_request_error",
                              "not_found_error")),
    (UnknownResponse, _Kind(404, "previous_response_not_found", "invalid_request_error",
                            "not_found_error")),
    (BudgetExceeded, _Kind(429, "budget_exceeded", "insufficient_quota", "rate_limit_error")),
    (RateLimited, _Kind(429, "rate_limited", "rate_limit_error", "rate_limit_error")),
    (ContextWindowExceeded, _Kind(400, "context_length_exceeded", "invalid_request_error",
                                  "invalid_request_error")),
    (AuthenticationFailed, _Kind(502, "upstream_authentication_failed", "api_error",
                                 "api_error")),
    (AllDeploymentsFailed, _Kind(503, "all_deployments_failed", "api_error",
                                 "overloaded_error")),
    (ProviderUnavailable, _Kind(503, "provider_unavailable", "api_error", "overloaded_error")),
    (ProviderRejected, _Kind(400, "provider_rejected", "invalid_request_error",
                             "invalid_request_error")),
    (ProviderError, _Kind(502, "provider_error", "api_error", "api_error")),
    (LedgerError, _Kind(503, "ledger_unavailable", "api_error", "api_error")),
    (ConfigError, _Kind(500, "config_error", "server_error", "api_error")),
    (LLMGatewayError, _Kind(500, "gateway_error", "server_error", "api_error")),
)

# The front's own refusals, by status.
_FRONT: dict[int, tuple[str, str]] = {  # status -> (OpenAI type, Anthropic type)
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    431: ("invalid_request_error", "invalid_request_error"),
    500: ("server_error", "api_error"),
}


def kind_of(exc: LLMGatewayError) -> _Kind:
    for cls, kind in _TABLE:
        if isinstance(exc, cls):
            return kind
    raise AssertionError("LLMGatewayError is the table's last row")


def retry_after_s(exc: LLMGatewayError, now: datetime | None = None) -> int | None:
    """Seconds until trying again can help: a budget window's reset, or the provider's
    Retry-After. None when waiting does not help (a per-request cap) or nobody said."""
    if isinstance(exc, BudgetExceeded):
        if exc.window == "request" or exc.resets_at is None:
            return None
        resets = exc.resets_at
        if resets.tzinfo is None:
            resets = resets.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        return max(1, math.ceil((resets - now).total_seconds()))
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(1, math.ceil(exc.retry_after))
    return None


def body(api: Api, status: int, code: str, message: str, *, openai_type: str,
         anthropic_type: str, param: str | None = None) -> dict[str, object]:
    if api == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    return {"error": {"message": message, "type": openai_type, "code": code, "param": param}}


def gateway_error_response(exc: LLMGatewayError, api: Api) -> JSONResponse:
    kind = kind_of(exc)
    message = f"{exc.message} {exc.hint}" if exc.hint else exc.message
    headers: dict[str, str] = {}
    wait = retry_after_s(exc)
    if wait is not None:
        headers["retry-after"] = str(wait)
    request_id = getattr(exc, "request_id", None)
    if not request_id:
        # Refused before the pipeline named it (the key check with the ledger down, say):
        # an id of its own, logged, so the caller can quote it and the operator find it.
        request_id = exc.request_id = new_request_id()
        log.warning("request %s: %s %s (%s)", request_id, kind.status, kind.code,
                    type(exc).__name__)
    headers["x-llmgw-request-id"] = request_id
    return JSONResponse(body(api, kind.status, kind.code, message, openai_type=kind.openai_type,
                             anthropic_type=kind.anthropic_type),
                        status_code=kind.status, headers=headers)


def front_error_response(exc: FrontError, api: Api, *, request_id: str | None = None) -> JSONResponse:
    """The front's own refusal. It carries a request id like every answer does (nothing was
    recorded under it: the front refused before the pipeline)."""
    openai_type, anthropic_type = _FRONT.get(exc.status, _FRONT[500])
    headers = {"x-llmgw-request-id": request_id or new_request_id()}
    if exc.status == 401:
        headers["www-authenticate"] = "Bearer"
    return JSONResponse(body(api, exc.status, exc.code, exc.message, openai_type=openai_type,
                             anthropic_type=anthropic_type, param=exc.param),
                        status_code=exc.status, headers=headers)


def stream_error_payload(exc: LLMGatewayError | None, message: str, api: Api) -> dict[str, object]:
    """The error event of a stream that broke after its first token (the status is sent)."""
    kind = kind_of(exc) if exc is not None else _Kind(502, "provider_error", "api_error",
                                                      "api_error")
    return body(api, kind.status, kind.code, message, openai_type=kind.openai_type,
                anthropic_type=kind.anthropic_type)


def api_of(path: str) -> Api:
    """Which error shape a path speaks."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"
