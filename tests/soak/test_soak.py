"""The soak's 60-second version (bench/soak.py): mixed SDK traffic against `llmgw serve
--workers 2` on PostgreSQL and Redis through one of each fault. Every figure must hold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_minute_of_traffic_through_every_fault_keeps_the_books_exact(tmp_path):
    soak = _soak_module()
    report = soak.run_soak(60.0, concurrency=6, workdir=tmp_path)
    figures = report.figures
    failed = [name for name, passed in report.checks.items() if not passed]
    assert not failed, (failed, soak.window_table(report.outcomes, report.windows), figures)
    assert report.faults_done == {name: 1 for name in soak.FAULTS}
    assert figures["open reservations"] == 0 and figures["counters mismatched"] == 0
    assert figures["workers killed"] == figures["workers respawned"] == 1
    assert figures["ok"] > 0 and figures["budget refusals"] > 0 and figures["hang-ups"] > 0
    # every window saw traffic, and every client kind ran
    assert {o.window for o in report.outcomes} == set(report.windows)
    assert {o.kind for o in report.outcomes} >= {
        "chat_json", "chat_stream", "responses_json", "responses_stream", "messages_json",
        "messages_stream", "hangup_stream", "cancel_json", "budget_refusal"}
