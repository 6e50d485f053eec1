"""The spend chart's per-day split: the fast path (one rollup query, checked against
`usage_report`) and the per-day `usage_report` path it falls back to give the same segments,
and each segment is `llmgw usage report --by <stack> --since D --until D+1`'s row."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from llmgw.ledger.report import usage_report
from llmgw.ledger.timespec import utcnow
from llmgw.server.ui import data as ui_data
from tests.ui.conftest import Filled


@pytest.mark.parametrize("stack", ["model-group", "agent-type"])
@pytest.mark.parametrize("project", [None, "proj-a"])
def test_split_is_the_reports_per_day(filled: Filled, stack: str, project: str | None,
                                      monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    now = utcnow()
    fast = ui_data.spend(filled.engine, project, stack, now)  # type: ignore[arg-type]
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for day in fast.days:
        start = datetime.fromisoformat(day.day)
        until = None if start == today else start + timedelta(days=1)
        expected = {r.key: r.cost_micros for r in usage_report(
            filled.engine, by=stack, project=project, since=start, until=until)  # type: ignore[arg-type]
            if r.cost_micros}
        assert dict(day.segments) == expected, day.day
        assert sum(expected.values()) == day.total.cost_micros
    assert sum(1 for d in fast.days if d.segments) == 8
    # a split that disagrees with the reports is not shown: the reports are asked per day
    monkeypatch.setattr(ui_data, "_day_key_costs", lambda *a: {("2000-01-01", "x"): 1})
    with caplog.at_level(logging.WARNING, logger="llmgw.server.ui.views"):
        slow = ui_data.spend(filled.engine, project, stack, now)  # type: ignore[arg-type]
    assert "disagrees" in caplog.text
    assert slow.days == fast.days and slow.keys == fast.keys and slow.period == fast.period
