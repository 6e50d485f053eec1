"""The attempt recorder: a request's failed attempts, collected from inside LiteLLM's Router.

- `AttemptCallbacks`: a CustomLogger that collects each failed attempt into its request's
  trace (opened and closed through its Router's `AttemptRecorder`). LiteLLM awaits failure
  callbacks inline (before it retries, falls back or raises), so the trace is complete when
  `Router.acompletion` returns or raises.
- Bad credentials surface, never hide (docs/routing.md): `no_failover_after_auth_failure`, the
  Router's `fallback_access_check`, refuses any fallback once the request has seen a
  401/403; the recorder's `async_filter_deployments` refuses any further pick in that
  request (a retry on a sibling), and refuses a group while one of its deployments is known
  bad (`llmgw.routing.credentials`: an unset key variable, or cooling down after a 401).

LiteLLM's callbacks are process-wide, so one `AttemptCallbacks` serves every Router of the
process; what it acts with (config, credential guard, capacity gate, redactor) is per Router
(`RouterServices`): a request's trace carries its Router's, and every call a Router makes names
its Router in its metadata (`ROUTER_KEY`), so a second gateway never takes over the first's.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmgw._litellm import add_callback
from llmgw._litellm.logger import CustomLogger
from llmgw.config.models import Config
from llmgw.errors import AuthenticationFailed
from llmgw.redact import Redactor
from llmgw.routing.capacity import Admission, CapacityGate, NoCapacity
from llmgw.routing.constraints import RoutePlan
from llmgw.routing.credentials import CredentialGuard, Refusal
from llmgw.routing.errors import NoCapacityNotSent, NotSent, classify, provider_message, status_code_of
from llmgw.routing.siblings import able_to_run_tools, siblings_first
from llmgw.types import Attempt

log = logging.getLogger("llmgw.routing.recorder")

REQUEST_ID_KEY = "llmgw_request_id"
# In every call's metadata (the Router's default_litellm_params): which llmgw Router made it.
ROUTER_KEY = "llmgw_router"

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
    routing: RoutePlan | None = None  # per-call constraints (llmgw.routing.constraints)
    latency_ms: Callable[[str], float | None] = _no_latency
    admission: Admission = field(default_factory=Admission)  # leases and wait (llmgw.routing.capacity)
    services: RouterServices | None = None  # those of the Router the request goes through

    @property
    def auth_failed(self) -> bool:
        return any(a.error_class == AuthenticationFailed.__name__ for a in self.failures)



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
            raise NotSent("this request's key was already refused; it is not retried",
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
        raise NotSent(refusal.reason, llm_provider=refusal.deployment.provider, model=model)

    async def _admit(self, model: str, candidates: list[Any], trace: RequestTrace,
                     gate: CapacityGate | None) -> list[Any]:
        """The deployment this attempt may use, with a lease on its capacity, when any
        candidate declares rpm/tpm/max_parallel_requests (`llmgw.routing.capacity`); else all."""
        if gate is None or not candidates or not gate.limited(
                (d.get("model_info") or {}).get("id") for d in candidates):
            return candidates
        plan = trace.routing
        try:
            return await gate.admit(model, candidates, trace.admission,
                                    ordered=bool(plan and plan.constraints.prefer),
                                    allowed=plan.allowed if plan else None)
        except NoCapacity as exc:
            raise NoCapacityNotSent(exc) from None

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
        if trace is None or isinstance(exc, NotSent):  # a refusal is recorded where it is made
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


def attach_services(router: Any, services: RouterServices) -> None:
    """`router` (one `build_router` made) is handled with `services`, and so is any call that
    names no Router from now on."""
    setattr(router, _SERVICES_ATTR, services)
    attempt_callbacks().register(services)


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


async def no_failover_after_auth_failure(*, model: str, request_kwargs: Mapping[str, object],
                                          llm_router: Any) -> bool:
    trace = _trace_of(request_kwargs, attempt_callbacks().traces)
    return not (trace and trace.auth_failed)
