"""Prometheus metrics from the gateway's events (`prometheus-client`), one registry per gateway.

Series (labels: project, agent_type, model_group, deployment, plus those named):
  llmgw_requests_total{status}            one per request, by how it ended
  llmgw_attempts_total{status}            one per ledger row (retries and fallbacks included)
  llmgw_errors_total{error_class}         one per failed attempt, recovered or not
  llmgw_tokens_total{kind}                tokens of every attempt, by kind: input, output,
                                          cache_read, cache_write, cache_write_1h, reasoning
                                          (cache reads and writes are inside input, 1h writes
                                          inside cache_write, reasoning inside output; kinds
                                          prompt / completion are input / output, kept for
                                          existing dashboards)
  llmgw_cost_microdollars_total           what the attempts cost, in integer micro-dollars
                                          so it agrees with the ledger exactly (/1e6 for USD)
  llmgw_saved_microdollars_total          what cache hits saved
  llmgw_request_duration_seconds          histogram, per request, as the caller waited
  llmgw_fallbacks_total{from_group, to_group}  (project, agent_type only)
  llmgw_budget_warnings_total{scope, period}, llmgw_budget_refusals_total{scope, period}
  llmgw_requests_in_flight                gauge (no labels)
  llmgw_ledger_write_failures_total       requests whose rows could not be written
Costs and tokens are labelled by the attempt's own group and deployment, as the ledger rows are.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from llmgw.observe.events import EventBus

_WHO = ("project", "agent_type", "model_group", "deployment")
# llmgw_tokens_total's kinds: the Usage field each counts (what the ledger row keeps).
TOKEN_KINDS = (("input", "prompt_tokens"), ("output", "completion_tokens"),
               ("cache_read", "cached_tokens"), ("cache_write", "cache_write_tokens"),
               ("cache_write_1h", "cache_write_1h_tokens"), ("reasoning", "reasoning_tokens"),
               ("prompt", "prompt_tokens"), ("completion", "completion_tokens"))
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class PrometheusMetrics:
    """Counters fed by one gateway's events; `serve()` exposes them on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmgw_requests", "Requests by how they ended",
                                [*_WHO, "status"], registry=r)
        self.attempts = Counter("llmgw_attempts", "Attempts (ledger rows)",
                                [*_WHO, "status"], registry=r)
        self.errors = Counter("llmgw_errors", "Failed attempts", [*_WHO, "error_class"],
                              registry=r)
        self.tokens = Counter("llmgw_tokens", "Tokens", [*_WHO, "kind"], registry=r)
        self.cost = Counter("llmgw_cost_microdollars", "Cost in micro-dollars", list(_WHO),
                            registry=r)
        self.saved = Counter("llmgw_saved_microdollars", "Saved by cache hits, micro-dollars",
                             list(_WHO), registry=r)
        self.duration = Histogram("llmgw_request_duration_seconds", "Request duration",
                                  list(_WHO), buckets=_BUCKETS, registry=r)
        self.fallbacks = Counter("llmgw_fallbacks", "Failed attempts followed by another",
                                 ["project", "agent_type", "from_group", "to_group"], registry=r)
        self.budget_warnings = Counter("llmgw_budget_warnings", "Warn ratios crossed",
                                       ["scope", "period"], registry=r)
        self.budget_refusals = Counter("llmgw_budget_refusals", "Requests refused by budgets",
                                       ["scope", "period"], registry=r)
        self.in_flight = Gauge("llmgw_requests_in_flight", "Requests started, not finished",
                               registry=r)
        self.ledger_failures = Counter("llmgw_ledger_write_failures",
                                       "Requests whose ledger rows could not be written",
                                       registry=r)
        self._server: Any = None

    def attach(self, events: EventBus) -> PrometheusMetrics:
        """Count what a gateway's event bus (`gw.events`) reports."""
        events.on("request.started", self._started)
        events.on("request.finished", self._finished)
        events.on("fallback", self._fallback)
        events.on("budget.warning", self._budget_warning)
        events.on("budget.refused", self._budget_refused)
        return self

    @classmethod
    def from_settings(cls, settings: Any, events: EventBus) -> PrometheusMetrics | None:
        """The exporter when `llmgw.metrics` (or LLMGW_METRICS_PORT) turns it on, counting
        `events` and serving its port; None when off."""
        if not settings.enabled:
            return None
        metrics = cls().attach(events)
        metrics.serve(settings.host, settings.port)
        return metrics

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Expose /metrics over HTTP in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes, for embedding in another web app."""
        return generate_latest(self.registry)

    # -- event handlers ------------------------------------------------------------------

    def _started(self, _event: str, p: dict[str, Any]) -> None:
        self.in_flight.inc()

    def _finished(self, _event: str, p: dict[str, Any]) -> None:
        self.in_flight.dec()
        project, agent_type = p["project_id"], p["agent_type"] or ""
        who = (project, agent_type, p["model_group"] or "", p["deployment"] or "")
        self.requests.labels(*who, p["status"]).inc()
        self.duration.labels(*who).observe(p["duration_s"])
        if not p["ledger_written"]:
            self.ledger_failures.inc()
        for a in p["attempts"]:
            row = (project, agent_type, a.model_group or "", a.deployment or "")
            self.attempts.labels(*row, a.status).inc()
            if a.status == "error":
                self.errors.labels(*row, a.error_class or "").inc()
            for kind, field in TOKEN_KINDS:
                count = getattr(a.usage, field, 0)
                if count:
                    self.tokens.labels(*row, kind).inc(count)
            if a.cost_micros:
                self.cost.labels(*row).inc(a.cost_micros)
        if p["saved_micros"]:
            self.saved.labels(*who).inc(p["saved_micros"])

    def _fallback(self, _event: str, p: dict[str, Any]) -> None:
        self.fallbacks.labels(p["project_id"], p["agent_type"] or "", p["from_group"] or "",
                              p["to_group"] or "").inc()

    def _budget_warning(self, _event: str, p: dict[str, Any]) -> None:
        self.budget_warnings.labels(p["scope"], p["period"]).inc()

    def _budget_refused(self, _event: str, p: dict[str, Any]) -> None:
        self.budget_refusals.labels(p["scope"], p["period"]).inc()
