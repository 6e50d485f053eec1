"""LiteLLM's Router, built from our config, and the one table that maps its errors to ours.

LiteLLM does retries, fallbacks, cooldowns and routing. We add these around it:
- `AttemptCallbacks`: a CustomLogger that collects each failed attempt into its request's
  trace (opened and closed through its Router's `AttemptRecorder`). LiteLLM awaits failure
  callbacks inline (before it retries, falls back or raises), so the trace is complete when
  `Router.acompletion` returns or raises.
- Bad credentials surface, never hide (docs/routing.md): `_no_failover_after_auth_failure`, the
  Router's `fallback_access_check`, refuses any fallback once the request has seen a
  401/403; the recorder's `async_filter_deployments` refuses any further pick in that
  request (a retry on a sibling), and refuses a group while one of its deployments is known
  bad (`llmgw.credentials`: an unset key variable, or cooling down after a 401).
- `map_exception`: LiteLLM exception -> `llmgw.errors`, in one place; it scrubs the LiteLLM
  exception, which stays reachable as our error's `__context__`.

LiteLLM's callbacks are process-wide, so one `AttemptCallbacks` serves every Router of the
process; what it acts with (config, credential guard, capacity gate, redactor) is per Router
(`RouterServices`): a request's trace carries its Router's, and every call a Router makes names
its Router in its metadata (`ROUTER_KEY`), so a second gateway never takes over the first's.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from llmgw import providers
from llmgw._litellm import add_callback, registered_callbacks, remove_callbacks
from llmgw._litellm import errors as litellm_errors
from llmgw._litellm.errors import RouterRateLimitError
from llmgw._litellm.logger import CustomLogger
from llmgw._litellm.router_class import (
    general_settings_class,
    hide_router_debug_in_errors,
    router_class,
)
from llmgw.capacity import Admission, CapacityGate, NoCapacity
from llmgw.config import Config
from llmgw.constraints import RoutePlan
from llmgw.credentials import CredentialGuard, Refusal
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
from llmgw.routing import able_to_run_tools, retry_floors, siblings_first
from llmgw.types import Attempt

log = logging.getLogger("llmgw.router")

REQUEST_ID_KEY = "llmgw_request_id"
# In every call's metadata (the Router's default_litellm_params): which llmgw Router made it.
ROUTER_KEY = "llmgw_router"

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
    if isinstance(exc, _NoCapacity):
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
    if isinstance(exc, _NoCapacity):
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

def _no_latency(deployment_id: str) -> float | None:
    return None


@dataclass(eq=False)
class RouterServices:
    """What the attempt recorder acts with for the calls of one Router (one gateway): the
    config that names its deployments, its credential guard, its capacity gate and the
    redactor of its secrets. `key` names the Router in each call's metadata (`ROUTER_KEY`)."""

    config: Config | None = None
    guard: CredentialGuard | None = None
    gate: CapacityGate | None = None
    redactor: Redactor = field(default_factory=Redactor)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class RequestTrace:
    """The failed attempts of one request, in the order LiteLLM made them."""

    request_id: str
    failures: list[Attempt] = field(default_factory=list)
    routing: RoutePlan | None = None  # per-call constraints (llmgw.constraints)
    latency_ms: Callable[[str], float | None] = _no_latency
    admission: Admission = field(default_factory=Admission)  # leases and wait (llmgw.capacity)
    services: RouterServices | None = None  # those of the Router the request goes through

    @property
    def auth_failed(self) -> bool:
        return any(a.error_class == AuthenticationFailed.__name__ for a in self.failures)


class _NotSent(litellm_errors.AuthenticationError):
    """Raised inside the Router instead of picking a deployment: the request already saw its
    key refused, or its group has a deployment known to be bad. An AuthenticationError, so
    the retry policy does not retry it; `map_exception` turns it into AuthenticationFailed."""


class _NoCapacity(_NotSent):
    """Raised inside the Router instead of picking a deployment: none the call may use has
    capacity (`llmgw.capacity`). A `_NotSent`, so it is never retried; the Router falls back,
    and `map_exception` turns it into RateLimited with `retry_after`. Nothing was sent."""

    def __init__(self, cause: NoCapacity) -> None:
        super().__init__(str(cause), llm_provider="", model=cause.group)
        self.status_code = 429  # type: ignore[assignment]  # LiteLLM types it as 401 only
        self.cause = cause


class AttemptCallbacks(CustomLogger):
    """Collects failed attempts per request id; the gateway writes them to the ledger. Also
    the Router's deployment filter that keeps bad credentials from being routed around.

    One per process (LiteLLM's callbacks are global), for every Router: each call is handled
    with the services of its own Router, found through its trace (`open(..., services=)`) or
    the Router key in its metadata; `latest` (the last Router built) only for a call that
    names neither."""

    def __init__(self) -> None:
        super().__init__()
        self.traces: dict[str, RequestTrace] = {}
        self.latest = RouterServices()
        # Router key -> its services; each Router holds its own, so they go with it.
        self._services: weakref.WeakValueDictionary[str, RouterServices] = (
            weakref.WeakValueDictionary())

    def register(self, services: RouterServices) -> None:
        """A new Router's services; the calls that name no Router use them from now on."""
        self._services[services.key] = services
        self.latest = services

    def open(self, request_id: str, services: RouterServices | None = None) -> RequestTrace:
        """Start collecting a request's attempts, acted on with `services` (its Router's;
        default: the latest Router's)."""
        trace = self.traces[request_id] = RequestTrace(request_id,
                                                       services=services or self.latest)
        return trace

    def close(self, request_id: str) -> RequestTrace:
        trace = self.traces.pop(request_id, None) or RequestTrace(request_id)
        gate = trace.services.gate if trace.services is not None else None
        if gate is not None:
            gate.release_all(trace.admission)
        return trace

    def services_of(self, trace: RequestTrace | None,
                    metadata: Mapping[str, object] | None) -> RouterServices:
        """The services a call is handled with: its trace's, else those of the Router its
        metadata names, else the latest Router's."""
        if trace is not None and trace.services is not None:
            return trace.services
        key = metadata.get(ROUTER_KEY) if metadata else None
        found = self._services.get(key) if isinstance(key, str) else None
        return found or self.latest

    async def async_filter_deployments(self, model: str, healthy_deployments: list[Any],
                                       messages: Any = None,
                                       request_kwargs: dict[str, Any] | None = None,
                                       parent_otel_span: Any = None) -> list[Any]:
        """Called by the Router before each pick of a deployment, with what it may pick from."""
        trace = _trace_of(request_kwargs or {}, self.traces)
        if trace is not None and trace.auth_failed:  # a retry (on a sibling) after a 401/403
            raise _NotSent("this request's key was already refused; it is not retried",
                           llm_provider="", model=model)
        services = self.services_of(trace, _metadata_of_request(request_kwargs or {}))
        guard = services.guard
        refusal = await guard.refusal(model, healthy_deployments) if guard else None
        if refusal is None:
            if trace is None:
                return healthy_deployments
            fresh = siblings_first(able_to_run_tools(healthy_deployments, request_kwargs or {}),
                                   (a.deployment for a in trace.failures))
            if trace.routing is not None:
                fresh = trace.routing.order(model, fresh, trace.latency_ms)
            return await self._admit(model, fresh, trace, services.gate)
        if trace is not None:
            trace.failures.append(_refused_attempt(len(trace.failures) + 1, model, refusal))
        raise _NotSent(refusal.reason, llm_provider=refusal.deployment.provider, model=model)

    async def _admit(self, model: str, candidates: list[Any], trace: RequestTrace,
                     gate: CapacityGate | None) -> list[Any]:
        """The deployment this attempt may use, with a lease on its capacity, when any
        candidate declares rpm/tpm/max_parallel_requests (`llmgw.capacity`); else all."""
        if gate is None or not candidates or not gate.limited(
                (d.get("model_info") or {}).get("id") for d in candidates):
            return candidates
        plan = trace.routing
        try:
            return await gate.admit(model, candidates, trace.admission,
                                    ordered=bool(plan and plan.constraints.prefer),
                                    allowed=plan.allowed if plan else None)
        except NoCapacity as exc:
            raise _NoCapacity(exc) from None

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: datetime, end_time: datetime) -> None:
        try:
            self._record_failure(kwargs, start_time, end_time)
        except Exception:  # a logging hook must never break the request
            log.exception("could not record a failed attempt")

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: datetime, end_time: datetime) -> None:
        try:  # tokens toward the deployment's tpm, as LiteLLM counts them: after the answer
            metadata = _metadata_of_call(kwargs)
            gate = self.services_of(self.traces.get(str(metadata.get(REQUEST_ID_KEY, ""))),
                                    metadata).gate
            if gate is not None:
                slo = kwargs.get("standard_logging_object") or {}
                gate.count_tokens(kwargs.get("model_id") or slo.get("model_id"),
                                  int(slo.get("total_tokens") or 0))
        except Exception:
            log.exception("could not count a deployment's tokens")

    def _record_failure(self, kwargs: dict[str, Any], start: datetime, end: datetime) -> None:
        metadata = _metadata_of_call(kwargs)
        trace = self.traces.get(str(metadata.get(REQUEST_ID_KEY, "")))
        exc = kwargs.get("exception") or Exception("unknown error")
        if trace is None or isinstance(exc, _NotSent):  # a refusal is recorded where it is made
            return
        services = self.services_of(trace, metadata)
        slo = kwargs.get("standard_logging_object") or {}
        deployment_id = kwargs.get("model_id") or slo.get("model_id")
        if services.gate is not None:  # the failed attempt's capacity is free again
            services.gate.release(deployment_id, trace.admission)
        config = services.config
        dep = config.deployment(deployment_id) if config and deployment_id else None
        trace.failures.append(Attempt(
            attempt=len(trace.failures) + 1,
            model_group=slo.get("model_group") or metadata.get("model_group") or "",
            deployment=deployment_id,
            provider=kwargs.get("custom_llm_provider") or (dep.provider if dep else None),
            model=dep.litellm_params.model if dep else kwargs.get("model"),
            status="error",
            error_class=classify(exc).__name__,
            error_message=provider_message(exc, services.redactor),
            status_code=status_code_of(exc),
            latency_ms=round((end - start).total_seconds() * 1000, 3),
        ))


class AttemptRecorder:
    """The attempt recorder of one Router (what `recorder(router)` returns): `open` gives each
    request's trace this Router's services, `gate` is this Router's capacity gate. The traces
    and LiteLLM's hooks are the process-wide `AttemptCallbacks`'."""

    def __init__(self, callbacks: AttemptCallbacks, services: RouterServices) -> None:
        self.callbacks = callbacks
        self.services = services

    @property
    def traces(self) -> dict[str, RequestTrace]:
        return self.callbacks.traces

    @property
    def config(self) -> Config | None:
        return self.services.config

    @property
    def guard(self) -> CredentialGuard | None:
        return self.services.guard

    @property
    def gate(self) -> CapacityGate | None:
        return self.services.gate

    @property
    def redactor(self) -> Redactor:
        return self.services.redactor

    def open(self, request_id: str, services: RouterServices | None = None) -> RequestTrace:
        """Start collecting a request's attempts; `services`: another Router's (default:
        this one's)."""
        return self.callbacks.open(request_id, services or self.services)

    def close(self, request_id: str) -> RequestTrace:
        return self.callbacks.close(request_id)


def _refused_attempt(number: int, group: str, refusal: Refusal) -> Attempt:
    dep = refusal.deployment
    return Attempt(attempt=number, model_group=group, deployment=dep.id, provider=dep.provider,
                   model=dep.litellm_params.model, status="error",
                   error_class=AuthenticationFailed.__name__, error_message=refusal.reason)


def _metadata_of_request(request_kwargs: Mapping[str, object]) -> Mapping[str, object] | None:
    """The metadata a Router call was made with (`litellm_metadata` on the Messages and
    Responses paths)."""
    for key in ("metadata", "litellm_metadata"):
        md = request_kwargs.get(key)
        if isinstance(md, Mapping):
            return md
    return None


def _metadata_of_call(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Our metadata, as LiteLLM's logging callbacks get it."""
    params = kwargs.get("litellm_params") or {}
    return params.get("metadata") or params.get("litellm_metadata") or {}


def _trace_of(request_kwargs: Mapping[str, object],
              traces: Mapping[str, RequestTrace]) -> RequestTrace | None:
    for key in ("metadata", "litellm_metadata"):
        md = request_kwargs.get(key)
        if isinstance(md, Mapping) and REQUEST_ID_KEY in md:
            return traces.get(str(md[REQUEST_ID_KEY]))
    return None


_CALLBACKS: AttemptCallbacks | None = None
# Set on each Router build_router makes: its RouterServices (the Router keeps them alive).
_SERVICES_ATTR = "llmgw_services"


def attempt_callbacks() -> AttemptCallbacks:
    """The process-wide LiteLLM hooks of every llmgw Router, registered once with LiteLLM
    (appended, never assigned)."""
    global _CALLBACKS
    if _CALLBACKS is None:
        _CALLBACKS = AttemptCallbacks()
    add_callback(_CALLBACKS)
    return _CALLBACKS


def router_services(router: Any) -> RouterServices | None:
    """The services of a Router `build_router` made (None for any other Router)."""
    services = getattr(router, _SERVICES_ATTR, None)
    return services if isinstance(services, RouterServices) else None


def recorder(router: Any = None) -> AttemptRecorder:
    """The attempt recorder for the requests of `router` (a Router `build_router` made);
    without one, of the latest Router built (the gateway's own when asked right after
    building it)."""
    callbacks = attempt_callbacks()
    services = router_services(router) if router is not None else None
    return AttemptRecorder(callbacks, services or callbacks.latest)


async def _no_failover_after_auth_failure(*, model: str, request_kwargs: Mapping[str, object],
                                          llm_router: Any) -> bool:
    trace = _trace_of(request_kwargs, attempt_callbacks().traces)
    return not (trace and trace.auth_failed)


# -- the router -----------------------------------------------------------------------------

# Callbacks a previous llmgw Router added to LiteLLM's globals. LiteLLM de-duplicates its
# routing handlers by class name, so a second Router's latency tracker would never register
# unless the first one's are taken out.
_previous_router_callbacks: list[object] = []

# LiteLLM's Router default when num_retries is unset (openai.DEFAULT_MAX_RETRIES).
DEFAULT_NUM_RETRIES = 2
# Retries that would be a silent failover or a pointless repeat; not overridable.
_FORCED_RETRY_POLICY = {"AuthenticationErrorRetries": 0, "BadRequestErrorRetries": 0}


def _snapshot() -> list[object]:
    return registered_callbacks()


def _release_previous_router() -> None:
    remove_callbacks(_previous_router_callbacks)
    _previous_router_callbacks.clear()


def _quiet_litellm_logs() -> None:
    level = os.environ.get("LLMGW_LITELLM_LOG_LEVEL", "CRITICAL").upper()
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(level)
    hide_router_debug_in_errors()


# LiteLLM's own switches llmgw turns on in the Router it builds, because they change nothing a
# user sees; a value the user sets in `router_settings` wins, field by field. Only Router
# settings belong here: a `litellm.<name>` global would change every caller in the process.
# async_only_mode: llmgw calls only the Router's async API, so it needs no sync clients.
# What each candidate did to LiteLLM's CPU per call, and why the others stay off:
# bench/README.md ("Lean LiteLLM settings").
LEAN_GENERAL_SETTINGS: Mapping[str, Any] = {"async_only_mode": True}


def lean_general_settings(configured: Any, lean: bool = True) -> Any:
    """The Router's `router_general_settings`: llmgw's lean defaults (unless `lean` is off),
    then each field the user set (a mapping or LiteLLM's `RouterGeneralSettings`) over them."""
    RouterGeneralSettings = general_settings_class()  # noqa: N806  (LiteLLM's class)
    if isinstance(configured, RouterGeneralSettings):
        mine = configured.model_dump(exclude_unset=True)
    else:
        mine = dict(configured or {})
    return RouterGeneralSettings(**{**(LEAN_GENERAL_SETTINGS if lean else {}), **mine})


def build_router(config: Config, redactor: Redactor) -> Any:
    """A `litellm.Router` for the config, with its own services (`RouterServices`: guard,
    capacity gate, redactor) that the attempt recorder uses for its calls. LiteLLM's own
    callbacks are process-wide: this Router takes over those of the Router built before it
    (see `_release_previous_router`)."""
    _quiet_litellm_logs()
    settings = config.router_settings.router_kwargs()
    configured = dict(settings.pop("retry_policy", None) or {})
    policy = {**configured, **_FORCED_RETRY_POLICY}
    # A group's own policy replaces the Router's; each group of n retries a deployment-level
    # error at least n - 1 times, so every sibling is tried before a fallback group.
    by_group = settings.pop("model_group_retry_policy", None) or {}
    num_retries = settings.get("num_retries")
    floors = retry_floors({g: len(d) for g, d in config.groups().items()}, configured, by_group,
                          DEFAULT_NUM_RETRIES if num_retries is None else num_retries,
                          _FORCED_RETRY_POLICY)
    if floors:
        settings["model_group_retry_policy"] = floors
    if settings.pop("cache_responses", False):
        log.warning("router_settings.cache_responses is ignored: llmgw caches answers itself")
    settings.setdefault("timeout", config.llmgw.request_timeout_s)
    lean = config.llmgw.lean_litellm
    settings["router_general_settings"] = lean_general_settings(
        settings.get("router_general_settings"), lean)

    providers.register()  # `ruvector/...` deployments need their handler before the Router
    _release_previous_router()
    before = {id(cb) for cb in _snapshot()}
    model_list = [d.to_litellm() for d in config.model_list]
    if settings.get("routing_strategy") == "cost-based-routing":
        # LiteLLM's cost-based strategy reads prices from litellm_params or its public price
        # map by model name, never from model_info: without this it routes by list prices.
        for entry in model_list:
            info = entry["model_info"]
            entry["litellm_params"].update(input_cost_per_token=info["input_cost_per_token"],
                                           output_cost_per_token=info["output_cost_per_token"])
    services = RouterServices(config=config, redactor=redactor)
    # Every call of this Router names it, so its callbacks find its services (ROUTER_KEY).
    defaults = dict(settings.get("default_litellm_params") or {})
    defaults["metadata"] = {**(defaults.get("metadata") or {}), ROUTER_KEY: services.key}
    settings["default_litellm_params"] = defaults
    router = router_class(lean)(
        model_list=model_list,
        retry_policy=policy,
        fallback_access_check=_no_failover_after_auth_failure,
        **settings,
    )
    _previous_router_callbacks.extend(cb for cb in _snapshot() if id(cb) not in before)
    _check_shared_state(config, redactor)
    services.guard = CredentialGuard(config, router)
    services.guard.warn_unset()
    services.gate = CapacityGate(config, config.router_settings.shared_state_url())
    setattr(router, _SERVICES_ATTR, services)
    attempt_callbacks().register(services)
    return router


def count_stream_failure(router: Any, attempt: Attempt) -> None:
    """Count a stream that failed after its first chunk as a failure of its deployment, as
    LiteLLM counts a failed call: toward `allowed_fails` / `allowed_fails_policy`, and a
    cooldown when over. LiteLLM's Router does not (its failure callback has run only for
    calls that failed before streaming). Counted as a server error (InternalServerError)."""
    if not attempt.deployment:
        return
    exc = litellm_errors.InternalServerError(
        message=f"stream failed mid-way: {attempt.error_message or attempt.error_class}",
        llm_provider=attempt.provider or "", model=attempt.model or "")
    now = datetime.now()
    try:
        router.deployment_callback_on_failure(
            kwargs={"exception": exc, "litellm_params": {
                "model_info": {"id": attempt.deployment},
                "metadata": {"model_group": attempt.model_group}}},
            completion_response=None, start_time=now, end_time=now)
    except Exception:  # counting must never break the request's settlement
        log.exception("could not count a failed stream against deployment %s",
                      attempt.deployment)


def _check_shared_state(config: Config, redactor: Redactor) -> None:
    """Say once, at start, when the Redis for shared Router state cannot be reached.

    LiteLLM keeps routing without it (cooldowns and latency stay per process), so this is
    a warning, not an error: an outage of Redis must not become an outage of the gateway."""
    url = config.router_settings.shared_state_url()
    if url is None:
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        log.warning("Shared Router state: Redis at %s is unreachable (%s); cooldowns and "
                    "latency stay per process until it is back. Check router_settings.redis_url "
                    "or LLMGW_REDIS_URL.", redactor.scrub(url), redactor.scrub(str(exc)))
    finally:
        client.close()


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
    if isinstance(exc, _NoCapacity):
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
