"""OpenTelemetry: a `llmgw.request` span per call, LiteLLM's spans under it, checked against
the ledger rows; no prompt text or API key in any span unless content capture is asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llmgw._litellm import CALLBACK_LISTS, import_litellm
from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded, ConfigError, ProviderError
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, ledger_rows, sim_config_dict

ASK = [{"role": "user", "content": "Draft the zephyr-42 release checklist."}]


def make_gateway(sims: Any, url: str, provider: Any = None, **otel: Any) -> Any:
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, url)
    data["llmgw"]["cache"] = {"backend": "memory"}
    data["llmgw"]["budgets"] = {"per_request_usd": "0.1"}
    if otel:
        data["llmgw"]["otel"] = otel
    return LLMGateway(config_from_dict(data), tracer_provider=provider)


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider whose spans are exported, as each ends, to a list the test reads."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def traced(sims, migrated_ledger_url: str) -> AsyncIterator:
    provider, exporter = memory_provider()
    gw = make_gateway(sims, migrated_ledger_url, provider)
    yield gw, exporter, migrated_ledger_url
    await gw.aclose()


def spans_of(exporter: InMemorySpanExporter, request_id: str) -> tuple[Any, list[Any]]:
    """The request's llmgw span and every span under it (LiteLLM's, at any depth)."""
    finished = exporter.get_finished_spans()
    [root] = [s for s in finished if s.name == "llmgw.request"
              and s.attributes["llmgw.request_id"] == request_id]
    ids = {root.context.span_id}
    under: list[Any] = []
    grew = True
    while grew:
        grew = False
        for s in finished:
            if s.parent is not None and s.parent.span_id in ids and s.context.span_id not in ids:
                ids.add(s.context.span_id)
                under.append(s)
                grew = True
    return root, under


def text_of(spans: list[Any]) -> str:
    return " ".join(f"{s.name} {dict(s.attributes)} {[e.attributes for e in s.events]}"
                    for s in spans)


async def test_a_request_is_one_span_with_litellm_under_it_and_the_ledger_cost(traced) -> None:
    gw, exporter, url = traced
    done = await gw.complete("qa-1", "proj-t", ASK, agent_type="qa-engineer")
    await gw.tracing.flush()
    root, under = spans_of(exporter, done.request_id)
    [row] = [r for r in ledger_rows(url) if r["request_id"] == done.request_id]
    assert dict(root.attributes) == {
        "llmgw.request_id": done.request_id, "llmgw.agent_id": "qa-1",
        "llmgw.project_id": "proj-t", "llmgw.agent_type": "qa-engineer", "llmgw.stream": False,
        "llmgw.requested_group": "backup", "llmgw.model_group": "backup",
        "llmgw.deployment": "backup-openai", "llmgw.provider": "openai", "llmgw.status": "ok",
        "llmgw.prompt_tokens": row["prompt_tokens"],
        "llmgw.completion_tokens": row["completion_tokens"],
        "llmgw.cost_micros": row["cost_micros"], "llmgw.saved_micros": 0,
        "llmgw.ledger_written": True, "llmgw.attempts": 1}
    assert row["cost_micros"] > 0
    assert root.status.status_code is StatusCode.OK
    litellm_spans = [s for s in under if s.name == "litellm_request"]
    assert [s.parent.span_id for s in litellm_spans] == [root.context.span_id]
    assert litellm_spans[0].attributes["litellm.model_group"] == "backup"
    assert root.context.trace_id == litellm_spans[0].context.trace_id
    # Content capture is off by default, and keys never appear.
    text = text_of([root, *under])
    assert "zephyr-42" not in text
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text


async def test_fallback_cache_hit_and_refusal_each_end_their_span(traced, sims) -> None:
    gw, exporter, url = traced
    openai_sim, anthropic_sim = sims
    anthropic_sim.plan = FaultPlan.parse("500:times=1")
    done = await gw.complete("arch-1", "proj-t", ASK, agent_type="software-architect")
    await gw.tracing.flush()
    root, under = spans_of(exporter, done.request_id)
    failed, served = [r for r in ledger_rows(url) if r["request_id"] == done.request_id]
    assert (root.attributes["llmgw.requested_group"], root.attributes["llmgw.model_group"],
            root.attributes["llmgw.attempts"]) == ("primary", "backup", 2)
    assert root.attributes["llmgw.cost_micros"] == failed["cost_micros"] + served["cost_micros"]
    assert root.status.status_code is StatusCode.OK
    # One LiteLLM span per attempt, the failed one included, all under the request's span.
    assert sorted(s.attributes.get("litellm.model_group", "?") for s in under
                  if s.name == "litellm_request") == ["backup", "primary"]

    hit = await gw.complete("arch-1", "proj-t", ASK, agent_type="software-architect",
                            model_group="backup")
    root, under = spans_of(exporter, hit.request_id)
    assert root.attributes["llmgw.status"] == "cached"
    assert root.attributes["llmgw.saved_micros"] == served["cost_micros"]
    assert under == []  # no provider call

    with pytest.raises(BudgetExceeded):
        await gw.complete("arch-1", "proj-t", ASK, agent_type="software-architect",
                          max_tokens=100_000)
    [refused] = [s for s in exporter.get_finished_spans() if s.name == "llmgw.request"
                 and s.attributes.get("llmgw.status") == "refused"]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["llmgw.error_class"] == "BudgetExceeded"
    assert spans_of(exporter, refused.attributes["llmgw.request_id"])[1] == []
    assert not gw.tracing._spans  # every span was ended


async def test_a_failed_request_is_an_error_span(traced, sims) -> None:
    gw, exporter, url = traced
    for sim in sims:
        sim.plan = FaultPlan.parse("500")
    with pytest.raises(ProviderError):
        await gw.complete("qa-2", "proj-t", ASK, agent_type="qa-engineer")
    await gw.tracing.flush()
    [root] = [s for s in exporter.get_finished_spans() if s.name == "llmgw.request"]
    rows = [r for r in ledger_rows(url) if r["request_id"] == root.attributes["llmgw.request_id"]]
    assert rows and all(r["status"] == "error" for r in rows)
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["llmgw.status"] == "error"
    assert root.attributes["llmgw.error_class"] == rows[-1]["error_class"]
    assert root.attributes["llmgw.attempts"] == len(rows)
    text = text_of(list(exporter.get_finished_spans()))
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text


async def test_content_capture_is_opt_in(sims, migrated_ledger_url: str) -> None:
    provider, exporter = memory_provider()
    gw = make_gateway(sims, migrated_ledger_url, provider, capture_content=True)
    try:
        done = await gw.complete("qa-3", "proj-t", ASK, agent_type="qa-engineer")
        await gw.tracing.flush()
        root, under = spans_of(exporter, done.request_id)
        assert "zephyr-42" in text_of(under)
    finally:
        await gw.aclose()


async def test_config_builds_its_own_provider_and_close_unhooks_litellm(
        sims, migrated_ledger_url: str, capsys) -> None:
    litellm = import_litellm()
    gw = make_gateway(sims, migrated_ledger_url, enabled=True, exporter="console",
                      service_name="fleet-a")
    logger = gw.tracing.litellm_logger
    assert logger in litellm.callbacks
    done = await gw.complete("qa-4", "proj-t", ASK, agent_type="qa-engineer")
    await gw.aclose()  # flushes: the console exporter printed the spans
    out = capsys.readouterr().out
    assert done.request_id in out and '"service.name": "fleet-a"' in out
    assert all(logger not in getattr(litellm, name) for name in CALLBACK_LISTS)


def test_without_otel_nothing_is_hooked(sims, migrated_ledger_url: str) -> None:
    gw = make_gateway(sims, migrated_ledger_url)
    try:
        assert gw.tracing is None
    finally:
        gw.close()


def test_a_missing_exporter_package_is_a_config_error(sims, migrated_ledger_url: str) -> None:
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        make_gateway(sims, migrated_ledger_url, enabled=True, exporter="otlp_grpc")


async def test_a_stream_is_one_span_with_litellm_under_it(traced) -> None:
    gw, exporter, url = traced
    events = [e async for e in gw.stream("qa-5", "proj-t", ASK, agent_type="qa-engineer")]
    done = events[-1].completion
    await gw.tracing.flush()
    root, under = spans_of(exporter, done.request_id)
    [row] = [r for r in ledger_rows(url) if r["request_id"] == done.request_id]
    assert (root.attributes["llmgw.stream"], root.attributes["llmgw.status"],
            root.attributes["llmgw.cost_micros"]) == (True, "ok", row["cost_micros"])
    assert [s.parent.span_id for s in under if s.name == "litellm_request"] == [
        root.context.span_id]


def test_complete_sync_waits_for_litellm_span(sims, migrated_ledger_url: str) -> None:
    """Each `complete_sync` runs its own event loop: LiteLLM's span must end before it does."""
    provider, exporter = memory_provider()
    gw = make_gateway(sims, migrated_ledger_url, provider)
    try:
        done = gw.complete_sync("qa-6", "proj-t", ASK, agent_type="qa-engineer")
        root, under = spans_of(exporter, done.request_id)
        assert [s.parent.span_id for s in under if s.name == "litellm_request"] == [
            root.context.span_id]
        assert not gw.tracing._unlogged  # nothing left for aclose to wait for
    finally:
        gw.close()


class _Collector:
    """A loopback OTLP/HTTP receiver: keeps each POSTed body (protobuf) with its path."""

    def __init__(self) -> None:
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip
                    body = gzip.decompress(body)
                received.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(name, attributes, resource attributes) of every span received."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        def values(attrs: Any) -> dict[str, Any]:
            out = {}
            for kv in attrs:
                field = kv.value.WhichOneof("value")
                out[kv.key] = getattr(kv.value, field) if field else None
            return out

        found = []
        for _, _, body in self.received:
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                resource = values(rs.resource.attributes)
                for ss in rs.scope_spans:
                    found.extend((s.name, values(s.attributes), resource) for s in ss.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_the_default_exporter_sends_otlp_http_to_the_collector(
        sims, migrated_ledger_url: str) -> None:
    collector = _Collector()
    try:
        gw = make_gateway(sims, migrated_ledger_url, enabled=True, endpoint=collector.url,
                          service_name="fleet-b")  # exporter: otlp_http, the default
        done = await gw.complete("qa-7", "proj-t", ASK, agent_type="qa-engineer")
        [row] = [r for r in ledger_rows(migrated_ledger_url)
                 if r["request_id"] == done.request_id]
        await gw.aclose()  # flushes the batch processor and shuts the provider down
        assert {(path, ctype) for path, ctype, _ in collector.received} == {
            ("/v1/traces", "application/x-protobuf")}
        spans = collector.spans()
        [(_, mine, resource)] = [s for s in spans if s[0] == "llmgw.request"]
        assert (mine["llmgw.request_id"], mine["llmgw.cost_micros"], resource["service.name"]
                ) == (done.request_id, row["cost_micros"], "fleet-b")
        assert "litellm_request" in {name for name, _, _ in spans}
    finally:
        collector.close()
