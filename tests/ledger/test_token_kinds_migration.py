"""Migration 0015: `cached_tokens` becomes `cache_read_tokens`, rows keep their rates, and the
rollup sums every token kind. Up, down and up again on both databases with nothing lost: the
rollup's sums equal plain SQL over usage_events at every step."""

from __future__ import annotations

import importlib.util
import uuid
from datetime import datetime
from types import ModuleType

from sqlalchemy import Engine, inspect, text

from llmgw.budgets.rules import CounterKey, Limit
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import current, downgrade, migrations_dir, upgrade
from llmgw.ledger.migrations.sqlfiles import legacy_load as load
from llmgw.ledger.store import LedgerStore, usage_row
from llmgw.pipeline.context import RequestContext
from llmgw.types import Attempt, Usage

KINDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")
KEY = ("project_id", "agent_id", "day", "agent_type", "model_group", "deployment_id", "provider",
       "model", "null_keys")
RATES = {"input": "0.000003", "output": "0.000015", "cache_read": "0.0000003",
         "cache_write": "0.00000375", "cache_write_1h": "0.000006"}


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, migrations_dir() / "legacy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _legacy_insert(engine: Engine, request_id: str, attempt: int, ts: str, *, agent_type: str | None,
                   deployment: str | None, cached: int, writes: int, writes_1h: int,
                   reasoning: int, cost: int) -> None:
    """A row as a 0014 ledger holds it (cache reads in `cached_tokens`), by plain SQL."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, project_id, "
            "model_group, deployment_id, provider, model, status, prompt_tokens, "
            "completion_tokens, cached_tokens, cost_micros, saved_micros, stream, "
            "cache_write_tokens, cache_write_1h_tokens, reasoning_tokens) VALUES (:r, :a, :ts, "
            "'claude-1', :at, 'p1', 'high-reasoning', :d, 'anthropic', 'claude-sonnet-4-5', 'ok', "
            "1000, 200, :c, :cost, 0, FALSE, :w, :w1, :rt)"),
            {"r": request_id, "a": attempt, "ts": datetime.fromisoformat(ts), "at": agent_type,
             "d": deployment, "c": cached, "cost": cost, "w": writes, "w1": writes_1h,
             "rt": reasoning})


def _day(engine: Engine) -> str:
    return "CAST(ts AS DATE)" if engine.dialect.name == "postgresql" else "date(ts)"


def _raw_sums(engine: Engine, read: str = "cache_read_tokens") -> dict[tuple, tuple[int, ...]]:
    """Every kind summed from usage_events by the rollup's key (NULLs as the rollup keeps them)."""
    kinds = (read, *KINDS[1:])
    sql = (f"SELECT project_id, agent_id, {_day(engine)}, COALESCE(agent_type, ''), model_group, "
           "COALESCE(deployment_id, ''), COALESCE(provider, ''), COALESCE(model, ''), "
           "CASE WHEN agent_type IS NULL THEN 1 ELSE 0 END "
           "+ CASE WHEN deployment_id IS NULL THEN 2 ELSE 0 END, "
           f"{', '.join(f'SUM({k})' for k in kinds)}, SUM(cost_micros) FROM usage_events "
           "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9")
    with engine.connect() as conn:
        return {tuple(str(v) for v in r[:9]): tuple(int(v) for v in r[9:])
                for r in conn.execute(text(sql))}


def _rollup_sums(engine: Engine) -> dict[tuple, tuple[int, ...]]:
    sql = f"SELECT {', '.join(KEY)}, {', '.join(KINDS)}, cost_micros FROM usage_rollup"
    with engine.connect() as conn:
        return {tuple(str(v) for v in r[:9]): tuple(int(v) for v in r[9:])
                for r in conn.execute(text(sql))}


def _columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def _pg_body(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = :n"),
                            {"n": name}).scalar_one()


def _sqlite_trigger(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                                 "AND name = 'usage_events_rollup'")).scalar_one()


def _body(sql: str) -> str:
    return sql.split("$$", 2)[1]


def _rows_now(request_id: str) -> list[dict]:
    ctx = RequestContext(request_id, "claude-1", "software-engineer", "p1", session_id="s1")
    usage = Usage(prompt_tokens=9000, completion_tokens=400, cached_tokens=7000,
                  cache_write_tokens=1500, cache_write_1h_tokens=500, reasoning_tokens=250)
    attempt = Attempt(attempt=1, model_group="high-reasoning", deployment="d1",
                      provider="anthropic", model="claude-sonnet-4-5", status="ok", usage=usage,
                      cost_micros=9_000, rates=RATES)
    return [usage_row(ctx, attempt, ts=datetime(2026, 12, 8, 9, 30))]


def test_sqlite_trigger_without_kinds_is_0003s() -> None:
    """The downgrade puts back exactly the trigger 0003 made."""
    assert _migration("0015_token_kinds").sqlite_trigger(()) == \
        _migration("0003_usage_rollup").trigger_ddl("sqlite")[0]


def test_0015_up_down_up_keeps_every_kind(ledger_url: str) -> None:
    upgrade(ledger_url, "0014")
    engine = make_engine(ledger_url)
    try:
        # Two days, NULL keys, a request of two rows: the rollup's keys all get exercised.
        _legacy_insert(engine, "r1", 1, "2026-12-06 10:00", agent_type="swe", deployment="d1",
                       cached=800, writes=250, writes_1h=100, reasoning=120, cost=4_000)
        _legacy_insert(engine, "r1", 2, "2026-12-06 10:01", agent_type="swe", deployment="d2",
                       cached=50, writes=0, writes_1h=0, reasoning=0, cost=1_000)
        _legacy_insert(engine, "r2", 1, "2026-12-07 23:59", agent_type=None, deployment=None,
                       cached=6_000, writes=2_000, writes_1h=2_000, reasoning=0, cost=7_000)
        before = _raw_sums(engine, read="cached_tokens")
        assert sum(v[0] for v in before.values()) == 6_850

        upgrade(ledger_url, "0015")
        assert current(ledger_url) == "0015"
        columns = _columns(engine, "usage_events")
        assert {"cache_read_tokens", "rates"} <= columns and "cached_tokens" not in columns
        assert set(KINDS) <= _columns(engine, "usage_rollup")
        assert _raw_sums(engine) == before  # the values moved with the column
        assert _rollup_sums(engine) == before  # and the backfill put them in the rollup
        if engine.dialect.name == "postgresql":
            assert _pg_body(engine, "usage_events_rollup") == _body(load("usage_events_rollup", 3))
            assert _pg_body(engine, "llmgw_settle_many") == _body(load("llmgw_settle_many", 4))
        else:
            assert "cache_write_1h_tokens" in _sqlite_trigger(engine)

        # New rows through both write paths (the plain write, the settle) roll up every kind.
        ledger = LedgerStore(ledger_url, engine=engine)
        ledger.write_sync(_rows_now("r3"))
        after = _raw_sums(engine)
        assert _rollup_sums(engine) == after
        assert after != before
        with engine.connect() as conn:
            assert conn.execute(text("SELECT rates FROM usage_events WHERE request_id = 'r3'")
                                ).scalar_one() in (RATES, _json(RATES))

        downgrade(ledger_url, "0014")
        columns = _columns(engine, "usage_events")
        assert "cached_tokens" in columns and not {"cache_read_tokens", "rates"} & columns
        assert not set(KINDS) & _columns(engine, "usage_rollup")
        assert _raw_sums(engine, read="cached_tokens") == after
        if engine.dialect.name == "postgresql":
            assert _pg_body(engine, "usage_events_rollup") == _body(load("usage_events_rollup", 2))
            assert _pg_body(engine, "llmgw_settle_many") == _body(load("llmgw_settle_many", 3))
        else:
            assert _sqlite_trigger(engine) == _migration("0003_usage_rollup").trigger_ddl("sqlite")[0]
        # The 0014 schema still takes rows and rolls them up.
        _legacy_insert(engine, "r4", 1, "2026-12-06 11:00", agent_type="swe", deployment="d1",
                       cached=10, writes=20, writes_1h=5, reasoning=1, cost=500)
        with engine.connect() as conn:
            assert int(conn.execute(text("SELECT SUM(cost_micros) FROM usage_rollup")).scalar_one()) \
                == 4_000 + 1_000 + 7_000 + 9_000 + 500

        upgrade(ledger_url)
        final = _raw_sums(engine)
        assert _rollup_sums(engine) == final
        assert sum(v[0] for v in final.values()) == 6_850 + 7_000 + 10
    finally:
        engine.dispose()


async def test_the_settle_writes_cache_reads_and_rates(migrated_ledger_url: str) -> None:
    """SQLite: the settle's own insert; PostgreSQL: llmgw_settle_many version 4."""
    ledger = LedgerStore(migrated_ledger_url)
    budgets = BudgetStore(ledger.engine)
    try:
        request_id = uuid.uuid4().hex
        key = CounterKey("project", "p1", "day", datetime(2026, 12, 8))
        hold = await ledger.transact(budgets.reserve_op(
            request_id=request_id, amount_micros=50_000,
            limits=[Limit("project", "p1", "day", 1_000_000, 0.8)], keys=[key],
            created_at=datetime(2026, 12, 8, 9, 30), agent_id="claude-1",
            agent_type="software-engineer", project_id="p1", model_group="high-reasoning"))
        await ledger.transact(budgets.settle_op(hold, spent_micros=9_000,
                                                rows=_rows_now(request_id)))
        with ledger.engine.connect() as conn:
            row = conn.execute(text(
                f"SELECT {', '.join(KINDS)}, rates FROM usage_events WHERE request_id = :r"),
                {"r": request_id}).one()
        assert tuple(row[:4]) == (7000, 1500, 500, 250)
        assert row[4] in (RATES, _json(RATES))
        assert _rollup_sums(ledger.engine) == _raw_sums(ledger.engine)
    finally:
        ledger.dispose()


def _json(value: dict) -> str:
    import json

    return json.dumps(value)
