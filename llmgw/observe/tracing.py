"""OpenTelemetry traces through LiteLLM's own integration (`llmgw.otel`, extra `otel`).

Each gateway call is one `llmgw.request` span: who asked (agent, agent type, project), the
group asked for and the one that answered, how it ended, its tokens and its cost in integer
micro-dollars, as its ledger rows have them. LiteLLM's `OpenTelemetry` logger, on the same
tracer provider, puts its spans (a `litellm_request` per attempt, retries and fallbacks
included) under it: the gateway passes the span as `litellm_parent_otel_span`, the metadata
key LiteLLM's proxy uses. A budget refusal or a cache hit is a span with no LiteLLM child.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from llmgw._litellm import add_callback, remove_callback
from llmgw.config.models import OtelSettings
from llmgw.errors import ConfigError
from llmgw.routing.recorder import REQUEST_ID_KEY

log = logging.getLogger("llmgw.tracing")

PARENT_SPAN_KEY = "litellm_parent_otel_span"
SPAN_NAME = "llmgw.request"
_STARTED = ("request_id", "agent_id", "project_id", "agent_type", "stream")
_FINISHED = ("model_group", "deployment", "provider", "status", "error_class", "prompt_tokens",
             "completion_tokens", "cost_micros", "saved_micros", "ledger_written")
_FAILED = frozenset({"error", "refused", "partial"})
_FLUSH_TIMEOUT_S = 5.0


class Tracing:
    """A `llmgw.request` span per request, LiteLLM's spans under it, on one tracer provider."""

    def __init__(self, tracer_provider: Any, *, capture_content: bool = False,
                 owns_provider: bool = False) -> None:
        from llmgw._litellm.otel import OpenTelemetry, OpenTelemetryConfig

        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("llmgw")
        self._owns_provider = owns_provider
        self._spans: dict[str, Any] = {}
        # LiteLLM logs an answer (and ends its span) in a task it starts after returning it:
        # requests answered whose LiteLLM span has not ended yet, and the other order.
        self._unlogged: set[str] = set()
        self._logged: set[str] = set()
        self._waiter: asyncio.Future[None] | None = None  # flush's, on the loop it runs on
        tracing = self

        class LiteLLMSpans(OpenTelemetry):
            async def async_log_success_event(self, kwargs: Any, response_obj: Any,
                                              start_time: Any, end_time: Any) -> None:
                try:
                    await super().async_log_success_event(kwargs, response_obj, start_time,
                                                          end_time)
                finally:
                    tracing._answer_logged(kwargs)

        quiet = logging.getLogger("LiteLLM")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it warns that the proxy is missing: we are not it
        try:
            self.litellm_logger = LiteLLMSpans(
                config=OpenTelemetryConfig(
                    capture_message_content="SPAN_AND_EVENT" if capture_content
                    else "NO_CONTENT"),
                tracer_provider=tracer_provider)
        finally:
            quiet.setLevel(level)
        add_callback(self.litellm_logger)

    def start(self, request: dict[str, Any]) -> None:
        """Open the request's span (the `request.started` payload)."""
        attributes = {f"llmgw.{k}": request[k] for k in _STARTED}
        attributes["llmgw.requested_group"] = request["model_group"]
        self._spans[request["request_id"]] = self.tracer.start_span(SPAN_NAME,
                                                                    attributes=attributes)

    def parent(self, request_id: str) -> Any | None:
        """The span LiteLLM's spans of this request go under."""
        return self._spans.get(request_id)

    def finish(self, finished: dict[str, Any]) -> None:
        """Close the request's span (the `request.finished` payload)."""
        from opentelemetry.trace import Status, StatusCode

        request_id = finished["request_id"]
        span = self._spans.pop(request_id, None)
        if span is None:
            return
        answered = finished["status"] == "ok" and finished.get("deployment") is not None
        if request_id in self._logged:
            self._logged.discard(request_id)
        elif answered:
            if len(self._unlogged) >= 10_000:  # LiteLLM dropped logs (its queue was full)
                self._unlogged.clear()
            self._unlogged.add(request_id)
        for key in _FINISHED:
            if finished.get(key) is not None:
                span.set_attribute(f"llmgw.{key}", finished[key])
        span.set_attribute("llmgw.attempts", len(finished["attempts"]))
        if finished["status"] in _FAILED or not finished["ledger_written"]:
            span.set_status(Status(StatusCode.ERROR, finished.get("error_class") or
                                   finished["status"]))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end()

    async def flush(self) -> None:
        """`litellm_logged`, then export every ended span now."""
        await self.litellm_logged()
        self.provider.force_flush()

    async def litellm_logged(self) -> None:
        """Wait for LiteLLM's logging callbacks: they end its spans after the answer is
        returned, in a task of the loop that asked."""
        if self._unlogged:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, _FLUSH_TIMEOUT_S)
            except TimeoutError:
                log.warning("LiteLLM did not log %d answer(s) within %.0f s; their spans are "
                            "missing from the trace.", len(self._unlogged), _FLUSH_TIMEOUT_S)
                self._unlogged.clear()

    def _answer_logged(self, kwargs: dict[str, Any]) -> None:
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        request_id = metadata.get(REQUEST_ID_KEY)
        if request_id in self._unlogged:
            self._unlogged.discard(request_id)
            if not self._unlogged and self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
        elif request_id in self._spans:
            self._logged.add(request_id)

    def close(self) -> None:
        """Stop LiteLLM's logger; flush and shut down the provider if it was made here."""
        remove_callback(self.litellm_logger)  # from every list LiteLLM copied it to
        for span in self._spans.values():
            span.end()
        self._spans.clear()
        if self._owns_provider:
            self.provider.shutdown()


def make_tracing(settings: OtelSettings, tracer_provider: Any = None) -> Tracing | None:
    """Tracing on the caller's provider, or on one built from `llmgw.otel`; None when off."""
    if tracer_provider is None and not settings.enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError("llmgw.otel needs the OpenTelemetry SDK, which is not installed.",
                          key="llmgw.otel",
                          hint="pip install 'llmgw[otel]', or set llmgw.otel.enabled: false."
                          ) from exc
    if tracer_provider is not None:
        return Tracing(tracer_provider, capture_content=settings.capture_content)
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    return Tracing(provider, capture_content=settings.capture_content, owns_provider=True)


def _exporter(settings: OtelSettings) -> Any:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout)  # today's stdout, not import time's
    module = {"otlp_http": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
              "otlp_grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}[
                  settings.exporter]
    try:
        exporter_cls = __import__(module, fromlist=["OTLPSpanExporter"]).OTLPSpanExporter
    except ImportError as exc:
        package = module.rsplit(".", 1)[0].replace(".", "-")
        raise ConfigError(f"llmgw.otel.exporter {settings.exporter!r} needs {package}, which is "
                          "not installed.", key="llmgw.otel.exporter",
                          hint=f"pip install {package}, or pick another exporter.") from exc
    if not settings.endpoint:  # OTEL_EXPORTER_OTLP_ENDPOINT, or the exporter's default
        return exporter_cls()
    endpoint = settings.endpoint
    if settings.exporter == "otlp_http" and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # a base URL, as the env var takes
    return exporter_cls(endpoint=endpoint)
