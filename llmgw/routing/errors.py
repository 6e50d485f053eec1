"""LiteLLM's exceptions mapped to ours (`llmgw.errors`), in one place.

`classify` names our class for one LiteLLM exception; `map_exception` builds the typed error a
failed request raises, carrying every attempt it made, and scrubs the LiteLLM exception, which
stays reachable as our error's `__context__`. `NotSent` is what llmgw raises inside the Router
instead of picking a deployment (a refused key, no capacity): nothing went to a provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from llmgw._litellm import errors as litellm_errors
from llmgw._litellm.errors import RouterRateLimitError
from llmgw.config.models import Config
from llmgw.errors import (
    AllDeploymentsFailed,
    AuthenticationFailed,
    ContextWindowExceeded,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
)
from llmgw.redact import Redactor, scrub_exception
from llmgw.routing.capacity import NoCapacity

if TYPE_CHECKING:  # a trace is the recorder's; it only reads its failures here
    from llmgw.routing.recorder import RequestTrace

# -- the error table ------------------------------------------------------------------------
# Most specific first. Status codes win over classes for auth, because LiteLLM maps some
# providers' 401 bodies to BadRequestError.
_BY_CLASS: tuple[tuple[type[BaseException], type[ProviderError]], ...] = (
    (litellm_errors.ContextWindowExceededError, ContextWindowExceeded),
    (litellm_errors.AuthenticationError, AuthenticationFailed),
    (litellm_errors.PermissionDeniedError, AuthenticationFailed),
    (litellm_errors.RateLimitError, RateLimited),
    (RouterRateLimitError, ProviderUnavailable),
    (litellm_errors.Timeout, ProviderUnavailable),
    (litellm_errors.APIConnectionError, ProviderUnavailable),
    (litellm_errors.ServiceUnavailableError, ProviderUnavailable),
    (litellm_errors.BadGatewayError, ProviderUnavailable),
    (litellm_errors.InternalServerError, ProviderUnavailable),
    (litellm_errors.ContentPolicyViolationError, ProviderRejected),
    (litellm_errors.NotFoundError, ProviderRejected),
    (litellm_errors.UnprocessableEntityError, ProviderRejected),
    (litellm_errors.BadRequestError, ProviderRejected),
)
_BY_STATUS: Mapping[int, type[ProviderError]] = {
    401: AuthenticationFailed, 403: AuthenticationFailed, 429: RateLimited,
    400: ProviderRejected, 404: ProviderRejected, 422: ProviderRejected,
}
_HINTS: Mapping[type[ProviderError], str] = {
    AuthenticationFailed: "Check the API key of deployment {deployment} (model_list.yaml"
                          "{env}); llmgw does not fail over on bad credentials.",
    ProviderUnavailable: "The provider is down or unreachable; add or check the fallbacks of "
                         "group {group} in router_settings.fallbacks, or retry later.",
    ContextWindowExceeded: "Shorten the conversation or route to a group with a larger context "
                           "window (router_settings.context_window_fallbacks).",
    ProviderRejected: "The provider refused the request as sent; check the parameters and the "
                      "model name of deployment {deployment}.",
    AllDeploymentsFailed: "Every deployment in the fallback chain failed; see .attempts, check "
                          "`llmgw health`, or retry later.",
}


_NO_CAPACITY_HINT = ("Every deployment group {group!r} may use is at its rpm / tpm / "
                     "max_parallel_requests limit (model_list.yaml) and no capacity freed up "
                     "within llmgw.routing.max_queue_wait_s; retry after retry_after seconds, "
                     "or raise the limits. Nothing was sent to a provider.")

# LiteLLM reports a provider answer it cannot parse as a BadRequestError (422 for Gemini):
# that is the provider's fault, not the caller's.
_UNPARSABLE_ANSWER = re.compile(r"Error converting to valid response|Unable to convert .* "
                                r"response|JSONDecodeError|Expecting value: line", re.I)


def classify(exc: BaseException) -> type[ProviderError]:
    """Our error class for one LiteLLM exception."""
    if isinstance(exc, NoCapacityNotSent):
        return RateLimited
    if isinstance(exc, litellm_errors.ContextWindowExceededError):
        return ContextWindowExceeded
    status = status_code_of(exc)
    if status in (401, 403):
        return AuthenticationFailed
    if isinstance(exc, litellm_errors.BadRequestError) and _UNPARSABLE_ANSWER.search(str(exc)):
        return ProviderUnavailable
    for cls, ours in _BY_CLASS:
        if isinstance(exc, cls):
            return ours
    return _BY_STATUS.get(status or 0, ProviderUnavailable)


def status_code_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds from the provider's Retry-After (or -ms) header, if it sent one."""
    for source in (getattr(exc, "litellm_response_headers", None),
                   getattr(getattr(exc, "response", None), "headers", None)):
        if not source:
            continue
        try:
            ms = source.get("retry-after-ms")
            if ms is not None:
                return float(ms) / 1000
            value = source.get("retry-after")
        except Exception:
            continue
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
                return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())
            except (TypeError, ValueError):
                continue
    if isinstance(exc, NoCapacityNotSent):
        return exc.cause.retry_after
    if isinstance(exc, RouterRateLimitError):
        return float(exc.cooldown_time)
    return None


_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?")


def provider_message(exc: BaseException, redactor: Redactor, limit: int = 500) -> str:
    """The provider's own words, without LiteLLM's prefixes and debug appendix, scrubbed."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = str(text).split("\nLiteLLM:", 1)[0].split("Received Model Group=", 1)[0]
    text = _PREFIX.sub("", text.strip(), count=1).strip() or type(exc).__name__
    return (redactor.scrub(text) or "")[:limit]


# -- per-request traces ---------------------------------------------------------------------

class NotSent(litellm_errors.AuthenticationError):
    """Raised inside the Router instead of picking a deployment: the request already saw its
    key refused, or its group has a deployment known to be bad. An AuthenticationError, so
    the retry policy does not retry it; `map_exception` turns it into AuthenticationFailed."""


class NoCapacityNotSent(NotSent):
    """Raised inside the Router instead of picking a deployment: none the call may use has
    capacity (`llmgw.routing.capacity`). A `NotSent`, so it is never retried; the Router falls back,
    and `map_exception` turns it into RateLimited with `retry_after`. Nothing was sent."""

    def __init__(self, cause: NoCapacity) -> None:
        super().__init__(str(cause), llm_provider="", model=cause.group)
        self.status_code = 429
        self.cause = cause


def map_exception(exc: BaseException, *, trace: RequestTrace, model_group: str,
                  redactor: Redactor, config: Config) -> ProviderError:
    """The typed error for a failed request, carrying every attempt it made.

    `exc` is scrubbed in place: the gateway raises our error from inside its `except`, so
    Python keeps `exc` as the error's `__context__` (`from None` only hides it)."""
    attempts = trace.failures
    # The attempt whose key was refused, when there was one: it names the deployment, and
    # what ended the request after it (a refused retry) does not.
    auth = next((a for a in reversed(attempts)
                 if a.error_class == AuthenticationFailed.__name__), None)
    cls = AuthenticationFailed if auth else classify(exc)
    deployments = {a.deployment for a in attempts if a.deployment}
    if cls is not AuthenticationFailed and len(deployments) > 1:
        cls = AllDeploymentsFailed
    last = auth or (attempts[-1] if attempts else None)
    deployment = last.deployment if last else None
    dep = config.deployment(deployment) if deployment else None
    env = dep.api_key_env() if dep else None
    detail = (auth.error_message or "") if auth else provider_message(exc, redactor)
    status = auth.status_code if auth else status_code_of(exc)
    if cls is AllDeploymentsFailed:
        hops = "; ".join(f"{a.deployment} -> {a.error_class}" for a in attempts)
        message = f"All {len(attempts)} attempts for group {model_group!r} failed ({hops})."
    else:
        where = f" from {deployment}" if deployment else ""
        message = f"{cls.__name__}{where} (group {model_group!r}): {detail}"
    hint = _HINTS.get(cls, "").format(deployment=deployment or "?", group=model_group,
                                       env=f", env {env}" if env else "")
    if isinstance(exc, NoCapacityNotSent):
        hint = _NO_CAPACITY_HINT.format(group=model_group)
    kw: dict[str, Any] = dict(model_group=model_group, deployment=deployment,
                              provider=last.provider if last else None,
                              status_code=status, request_id=trace.request_id,
                              attempts=attempts)
    if hint:
        kw["hint"] = hint
    if cls is RateLimited:
        kw["retry_after"] = retry_after_of(exc)
    scrub_exception(exc, redactor)
    return cls(message, **kw)
