"""Migration 0013: session, end user, requested model, dialect and every token kind on each
ledger row, written by every insert path of both databases; up and down with rows kept and
the rollup trigger still adding up."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import inspect, select, text

from llmgw.budgets.rules import CounterKey, Limit
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import current, downgrade, upgrade
from llmgw.ledger.models import USAGE_COLUMNS, UsageEvent
from llmgw.ledger.store import OPTIONAL_USAGE, LedgerStore, usage_row
from llmgw.pipeline.context import RequestContext
from llmgw.types import Attempt, Usage

NOW = datetime(2026, 12, 6, 12, 0)
NEW = ("session_id", "end_user", "requested_model", "dialect", "cache_write_tokens",
       "cache_write_1h_tokens", "reasoning_tokens")
USAGE = Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=800,
              cache_write_tokens=250, cache_write_1h_tokens=100, reasoning_tokens=120)


def context(request_id: str | None = None, **kw) -> RequestContext:
    return RequestContext(request_id or uuid.uuid4().hex, "claude-1", "software-engineer", "p1",
                          stream=True, **({"session_id": "sess-9", "end_user": "alice",
                                            "requested_model": "claude-sonnet-4-5",
                                            "dialect": "anthropic"} | kw))


def rows_of(ctx: RequestContext, cost: int = 4_000) -> list[dict]:
    fallback = Attempt(attempt=1, model_group="high-reasoning", deployment="d1",
                       provider="anthropic", model="claude-sonnet-4-5", status="error",
                       error_class="Timeout")
    answer = Attempt(attempt=2, model_group="high-reasoning", deployment="d2",
                     provider="anthropic", model="claude-sonnet-4-5", status="ok", usage=USAGE,
                     cost_micros=cost)
    return [usage_row(ctx, a, ts=NOW) for a in (fallback, answer)]


def stored(engine, request_id: str) -> list[dict]:
    t = UsageEvent.__table__
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(*(t.c[c] for c in NEW), t.c.attempt).where(t.c.request_id == request_id)
            .order_by(t.c.attempt))]


EXPECTED = [
    {"session_id": "sess-9", "end_user": "alice", "requested_model": "claude-sonnet-4-5",
     "dialect": "anthropic", "cache_write_tokens": 0, "cache_write_1h_tokens": 0,
     "reasoning_tokens": 0, "attempt": 1},
    {"session_id": "sess-9", "end_user": "alice", "requested_model": "claude-sonnet-4-5",
     "dialect": "anthropic", "cache_write_tokens": 250, "cache_write_1h_tokens": 100,
     "reasoning_tokens": 120, "attempt": 2},
]


def test_usage_row_carries_the_context_and_every_token_kind():
    ctx = context()
    row = rows_of(ctx)[1]
    assert set(row) == set(USAGE_COLUMNS)
    assert {c: row[c] for c in NEW} == {k: v for k, v in EXPECTED[1].items() if k != "attempt"}
    plain = usage_row(RequestContext("r", "a", None, "p"), Attempt(attempt=1, model_group="g",
                                                                   status="ok"), ts=NOW)
    assert {c: plain[c] for c in OPTIONAL_USAGE} == {**OPTIONAL_USAGE, "dialect": "chat"}


def test_the_ledger_write_stores_them(migrated_ledger_url):
    """SQLite: the driver executemany; PostgreSQL: json_populate_recordset over the columns."""
    store = LedgerStore(migrated_ledger_url)
    try:
        ctx = context()
        store.write_sync(rows_of(ctx))
        assert stored(store.engine, ctx.request_id) == EXPECTED
    finally:
        store.dispose()


async def test_the_settle_stores_them(migrated_ledger_url):
    """SQLite: the settle's own insert; PostgreSQL: llmgw_settle_many version 3."""
    ledger = LedgerStore(migrated_ledger_url)
    budgets = BudgetStore(ledger.engine)
    try:
        limit = Limit("project", "p1", "day", 1_000_000, 0.8)
        key = CounterKey("project", "p1", "day", datetime(2026, 12, 6))
        ctx = context()
        hold = await ledger.transact(budgets.reserve_op(
            request_id=ctx.request_id, amount_micros=50_000, limits=[limit], keys=[key],
            created_at=NOW, agent_id=ctx.agent_id, agent_type=ctx.agent_type,
            project_id=ctx.project_id, model_group="high-reasoning"))
        await ledger.transact(budgets.settle_op(hold, spent_micros=4_000, rows=rows_of(ctx)))
        assert stored(ledger.engine, ctx.request_id) == EXPECTED
        assert budgets.counters([key]) == {key: (4_000, 0)}
    finally:
        ledger.dispose()


def test_rows_without_the_new_keys_still_write_with_defaults(migrated_ledger_url):
    """A writer that predates 0013 (hand-made rows, an import) gets NULLs and zeros."""
    store = LedgerStore(migrated_ledger_url)
    try:
        old = {k: v for k, v in rows_of(context("old-writer"))[1].items() if k not in NEW}
        store.write_sync([old])
        assert stored(store.engine, "old-writer") == [dict.fromkeys(NEW[:4]) | {
            "cache_write_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0,
            "attempt": 2}]
    finally:
        store.dispose()


def _columns_and_indexes(engine) -> tuple[set[str], set[str]]:
    insp = inspect(engine)
    return ({c["name"] for c in insp.get_columns("usage_events")},
            {i["name"] for i in insp.get_indexes("usage_events")})


def _settle_body(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = "
                                 "'llmgw_settle_many'")).scalar_one()


def _insert_at(engine, row: dict, columns) -> None:
    """A row written with an older revision's columns (cache reads were `cached_tokens`)."""
    values = {("cached_tokens" if k == "cache_read_tokens" else k): v for k, v in row.items()
              if k in columns}
    values["metadata"] = None
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO usage_events ({', '.join(values)}) "
                          f"VALUES ({', '.join(f':{k}' for k in values)})"), values)


def _totals(engine) -> tuple[int, int]:
    """(requests, cost) from the rollup, by plain SQL: the report reads 0015's columns."""
    with engine.connect() as conn:
        requests, cost = conn.execute(text(
            "SELECT SUM(req_first), SUM(cost_micros) FROM usage_rollup")).one()
    return int(requests), int(cost)


def test_0013_up_and_down_keeps_rows_and_the_rollup(ledger_url):
    before_0013 = [c for c in USAGE_COLUMNS if c not in OPTIONAL_USAGE]
    at_0013 = [*before_0013, *NEW]
    legacy = rows_of(context("before"))[1]
    upgrade(ledger_url, "0012")
    engine = make_engine(ledger_url)
    try:
        _insert_at(engine, legacy, before_0013)
        upgrade(ledger_url, "0013")
        assert current(ledger_url) == "0013"
        columns, indexes = _columns_and_indexes(engine)
        assert set(NEW) <= columns and "ix_usage_events_session" in indexes
        assert stored(engine, "before") == [dict.fromkeys(NEW[:4]) | {
            "cache_write_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0,
            "attempt": 2}]
        if engine.dialect.name == "postgresql":
            assert "cache_write_1h_tokens" in _settle_body(engine)
        ctx = context("after")
        for row in rows_of(ctx, cost=7_000):
            _insert_at(engine, row, at_0013)
        # The rollup trigger (names its columns) still adds the new rows up.
        assert _totals(engine) == (2, 11_000)
        with engine.connect() as conn:
            rollup = conn.execute(text("SELECT SUM(cost_micros) FROM usage_rollup")).scalar_one()
        assert int(rollup) == 11_000

        downgrade(ledger_url, "0012")
        columns, indexes = _columns_and_indexes(engine)
        assert not set(NEW) & columns and "ix_usage_events_session" not in indexes
        if engine.dialect.name == "postgresql":
            assert "session_id" not in _settle_body(engine)
        # the 0012 schema still takes rows, and rolls them up
        _insert_at(engine, legacy | {"request_id": "late"}, before_0013)
        assert _totals(engine)[1] == 15_000
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one() == 4
        upgrade(ledger_url, "0013")
        assert current(ledger_url) == "0013"
    finally:
        engine.dispose()


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_sqlite_keeps_its_rollup_triggers_across_0013(ledger_url):
    """ADD/DROP COLUMN in place: a table rebuild (batch mode) would drop the triggers."""
    def triggers(engine) -> set[str]:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
    upgrade(ledger_url, "0012")
    engine = make_engine(ledger_url)
    try:
        before = triggers(engine)
        assert before
        upgrade(ledger_url)
        assert triggers(engine) == before
        downgrade(ledger_url, "0012")
        assert triggers(engine) == before
    finally:
        engine.dispose()
