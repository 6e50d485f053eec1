"""LiteLLM's exception classes, for `llmgw.routing.errors`' error table and the errors llmgw raises
inside LiteLLM's Router. Importing this module imports LiteLLM (offline settings first)."""

from __future__ import annotations

from llmgw._litellm import import_litellm

import_litellm()
from litellm import (  # noqa: E402
    APIConnectionError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
    UnprocessableEntityError,
)
from litellm.types.router import RouterRateLimitError  # noqa: E402  (the Router's "all cooling down")

__all__ = [
    "APIConnectionError", "AuthenticationError", "BadGatewayError", "BadRequestError",
    "ContentPolicyViolationError", "ContextWindowExceededError", "InternalServerError",
    "NotFoundError", "PermissionDeniedError", "RateLimitError", "RouterRateLimitError",
    "ServiceUnavailableError", "Timeout", "UnprocessableEntityError",
]
