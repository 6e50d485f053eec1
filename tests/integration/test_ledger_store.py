"""LedgerStore writes the same values on its SQLite fast path as SQLAlchemy Core does."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import create_engine, select

from llmgw.ledger.models import UsageEvent
from llmgw.ledger.store import LedgerStore, usage_row
from llmgw.pipeline.context import RequestContext
from llmgw.types import Attempt, Usage


def _row(request_id: str) -> dict:
    attempt = Attempt(attempt=2, model_group="g", deployment="d", provider="openai", model="openai/m",
                      status="error", error_class="RateLimited", error_message="slow down ü",
                      latency_ms=12.5, usage=Usage(prompt_tokens=3, completion_tokens=4,
                                                   cached_tokens=1), cost_micros=77)
    ctx = RequestContext(request_id, "agent", None, "proj", stream=True)
    return usage_row(ctx, attempt, ts=datetime(2026, 11, 23, 10, 0, 0),
                     saved_micros=5, metadata={"k": [1, "two"], "nested": {"x": None}})


def test_fast_path_matches_core(migrated_ledger_url):
    store = LedgerStore(migrated_ledger_url)
    try:
        store.write_sync([_row("fast")])
        with store.engine.begin() as conn:  # the reference: plain Core
            conn.execute(UsageEvent.__table__.insert(), [_row("core")])
        with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(UsageEvent.__table__).order_by(UsageEvent.__table__.c.id))]
    finally:
        store.dispose()
    fast, core = ({k: v for k, v in r.items() if k not in ("id", "request_id")} for r in rows)
    assert fast == core
    engine = create_engine(migrated_ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:  # the stored text too: SQLite compares it as strings
        raw = conn.exec_driver_sql("SELECT ts, metadata, stream FROM usage_events ORDER BY id").all()
    engine.dispose()
    assert raw[0] == raw[1]
    assert fast["ts"] == datetime(2026, 11, 23, 10, 0, 0)
    assert fast["metadata"] == {"k": [1, "two"], "nested": {"x": None}}
    assert fast["stream"] is True and fast["agent_type"] is None


def test_a_failed_write_leaves_nothing_half_done(migrated_ledger_url):
    store = LedgerStore(migrated_ledger_url)
    try:
        import pytest

        from llmgw.errors import LedgerError

        duplicate = [_row("same"), _row("same")]  # (request_id, attempt) is unique
        with pytest.raises(LedgerError, match="llmgw db upgrade"):
            store.write_sync(duplicate)
        engine = create_engine(migrated_ledger_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert conn.execute(select(UsageEvent.__table__)).all() == []
        engine.dispose()
    finally:
        store.dispose()
