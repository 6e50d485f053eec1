"""The baseline (versions/0017_baseline.py) builds the schema the old chain 0001..0017 built,
on SQLite and PostgreSQL; a ledger made before the squash upgrades to it with its rows."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import BASELINE, alembic_config, current, head, upgrade
from tests.fixtures.databases import BACKENDS, fresh_database

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def _sql(value: str | None) -> str:
    """SQL text without layout: the baseline's files are indented, the old chain's one line."""
    flat = re.sub(r"\s+", " ", value or "").strip()
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", flat))


def _columns(insp: Any, table: str) -> list[tuple[Any, ...]]:
    return [(c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
            for c in insp.get_columns(table)]


def _indexes(insp: Any, table: str) -> list[tuple[Any, ...]]:
    def where(index: dict[str, Any]) -> str:  # a partial index's condition
        options = index.get("dialect_options", {})
        found = options.get("sqlite_where", options.get("postgresql_where"))
        return "" if found is None else _sql(str(found))

    return sorted((i["name"] or "", tuple(i["column_names"]), bool(i["unique"]), where(i))
                  for i in insp.get_indexes(table))


def _checks(insp: Any, table: str) -> list[tuple[str, str]]:
    return sorted((c["name"] or "", _sql(c["sqltext"])) for c in insp.get_check_constraints(table))


def _schema(engine: Engine) -> dict[str, Any]:
    """Everything a migration can change, in a form two ledgers can be compared by."""
    insp = inspect(engine)
    tables = sorted(insp.get_table_names())
    schema: dict[str, Any] = {"tables": tables}
    for table in tables:
        schema[table] = {
            "columns": _columns(insp, table),
            "pk": (insp.get_pk_constraint(table)["name"],
                   insp.get_pk_constraint(table)["constrained_columns"]),
            "indexes": _indexes(insp, table),
            "uniques": sorted((u["name"] or "", tuple(u["column_names"]))
                              for u in insp.get_unique_constraints(table)),
            "checks": _checks(insp, table),
            "foreign_keys": insp.get_foreign_keys(table),
        }
    schema["views"] = sorted(insp.get_view_names())
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE type IN ('trigger', 'view', 'index') ORDER BY type, name").all()
            schema["objects"] = [(t, n, tbl, _sql(sql)) for t, n, tbl, sql in rows]
            schema["without_rowid"] = sorted(
                n for n, sql in conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                if "WITHOUT ROWID" in (sql or "").upper())
        else:
            schema["functions"] = dict(conn.exec_driver_sql(
                "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1").all())
            schema["triggers"] = conn.exec_driver_sql(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                "ORDER BY 1").all()
            schema["views_sql"] = conn.exec_driver_sql(
                "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' "
                "ORDER BY 1").all()
            schema["indexdefs"] = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "ORDER BY 1").all()
            # PostgreSQL 18 lists NOT NULL as constraints named after the column as it was
            # created: 0015's rename of cached_tokens kept `usage_events_cached_tokens_not_null`.
            # What they constrain is compared; their names are not part of the schema we use.
            schema["constraints"] = conn.exec_driver_sql(
                "SELECT c.conrelid::regclass::text, CASE WHEN c.contype = 'n' THEN '' "
                "ELSE c.conname END, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = 'public' ORDER BY 1, 2, 3").all()
            schema["column_types"] = conn.exec_driver_sql(
                "SELECT table_name, ordinal_position, column_name, data_type, "
                "character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' "
                "ORDER BY 1, 2").all()
            schema["sequences"] = conn.exec_driver_sql(
                "SELECT sequence_name, data_type FROM information_schema.sequences "
                "WHERE sequence_schema = 'public' ORDER BY 1").all()
    return schema


def _schema_of(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        return _schema(engine)
    finally:
        engine.dispose()


def _old_chain(url: str, revision: str) -> None:
    """Build a ledger the way llmgw did before the squash: legacy/ only."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn, legacy=True), revision)
    finally:
        engine.dispose()


def test_the_baseline_builds_the_schema_of_the_old_chain(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as baseline, \
            fresh_database(backend, tmp_path) as chained, \
            fresh_database(backend, tmp_path) as upgraded:
        upgrade(baseline)
        _old_chain(chained, BASELINE)
        upgrade(upgraded, "0012")  # a pre-squash target stays on the old chain...
        assert current(upgraded) == "0012"
        upgrade(upgraded)  # ...and `llmgw db upgrade` takes it to 0017, then on to head
        assert current(baseline) == current(chained) == current(upgraded) == head() == BASELINE

        want = _schema_of(baseline)
        assert {"usage_events", "usage_rollup", "budgets", "api_keys", "stored_responses"} \
            <= set(want["tables"])
        if backend == "postgresql":  # the parts a comparison of two empty lists would miss
            assert {"llmgw_reserve_many", "llmgw_settle_many", "usage_events_rollup"} \
                <= want["functions"].keys()
            assert "llmgw_settle" not in want["functions"]  # retired by 0011
            assert [name for name, _ in want["triggers"]] == ["usage_events_rollup"]
        else:
            assert ("trigger", "usage_events_rollup", "usage_events") in \
                [obj[:3] for obj in want["objects"]]
            assert want["without_rowid"] == ["usage_rollup"]
        for name, got in (("old chain 0001-0017", _schema_of(chained)),
                          ("0012 upgraded", _schema_of(upgraded))):
            for key in want:
                assert got[key] == want[key], f"{name}: {key} differs from the baseline's"


T0 = datetime(2026, 12, 1, 9, 30)


def _fill_at_0012(engine: Engine) -> None:
    """Rows as a 0012 ledger holds them (cache reads were `cached_tokens`), by plain SQL."""
    with engine.begin() as conn:
        for i, (agent, cost) in enumerate((("a1", 300), ("a1", 200), ("a2", 50)), 1):
            conn.execute(text(
                "INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, "
                "project_id, model_group, status, prompt_tokens, completion_tokens, cached_tokens, "
                "cost_micros, saved_micros, stream) VALUES (:r, 1, :ts, :agent, 'dev', 'p', 'g', "
                "'ok', 10, 5, 2, :cost, 0, FALSE)"),
                {"r": f"req-{i}", "ts": T0, "agent": agent, "cost": cost})
        conn.execute(text(
            "INSERT INTO budgets (scope, scope_id, period, limit_micros, warn_ratio, updated_at) "
            "VALUES ('project', 'p', 'day', 1000000, 0.8, :ts)"), {"ts": T0})
        conn.execute(text(
            "INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros, "
            "reserved_micros, warned) VALUES ('project', 'p', 'day', :day, 550, 40, FALSE)"),
            {"day": datetime(2026, 12, 1)})
        conn.execute(text(
            "INSERT INTO reservations (request_id, created_at, state, amount_micros, agent_id, "
            "project_id, model_group, counters) VALUES ('req-open', :ts, 'open', 40, 'a1', 'p', "
            "'g', :counters)"),
            {"ts": T0, "counters": '[["project", "p", "day", "2026-12-01T00:00:00"]]'})
        conn.execute(text(
            "INSERT INTO api_keys (hash, prefix, project_id, agent_id, admin, created_at) "
            "VALUES ('h1', 'llmgw_ab', 'p', 'a1', FALSE, :ts)"), {"ts": T0})


def test_a_ledger_with_rows_at_0012_upgrades_with_them(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        upgrade(url, "0012")
        engine = make_engine(url)
        try:
            _fill_at_0012(engine)
            upgrade(url)
            assert current(url) == head()
            with engine.begin() as conn:
                assert conn.execute(text(
                    "SELECT request_id, agent_id, cost_micros, cache_read_tokens, "
                    "cache_write_tokens, reasoning_tokens, session_id FROM usage_events "
                    "ORDER BY request_id")).all() == [
                    ("req-1", "a1", 300, 2, 0, 0, None), ("req-2", "a1", 200, 2, 0, 0, None),
                    ("req-3", "a2", 50, 2, 0, 0, None)]
                # The rollup kept by the old triggers, with 0015's backfill of cache reads.
                assert conn.execute(text(
                    "SELECT agent_id, attempts, req_first, cost_micros, cache_read_tokens "
                    "FROM usage_rollup ORDER BY agent_id")).all() == [
                    ("a1", 2, 2, 500, 4), ("a2", 1, 1, 50, 2)]
                assert conn.execute(text(
                    "SELECT limit_micros FROM budgets")).scalar_one() == 1_000_000
                assert conn.execute(text(
                    "SELECT spent_micros, reserved_micros FROM budget_counters")).one() == (550, 40)
                assert conn.execute(text(
                    "SELECT request_id, state, amount_micros FROM reservations")).one() == (
                    "req-open", "open", 40)
                assert conn.execute(text(
                    "SELECT hash, agent_id, rpm, lineage_id FROM api_keys")).one() == (
                    "h1", "a1", None, None)
                # The upgraded ledger's trigger is the baseline's: a new row lands in the rollup.
                conn.execute(text(
                    "INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, "
                    "project_id, model_group, status, prompt_tokens, completion_tokens, "
                    "cache_read_tokens, cache_write_tokens, cost_micros, saved_micros, stream) "
                    "VALUES ('req-4', 1, :ts, 'a2', 'dev', 'p', 'g', 'ok', 1, 1, 0, 7, 25, 0, "
                    "FALSE)"), {"ts": T0})
                assert conn.execute(text(
                    "SELECT attempts, cost_micros, cache_write_tokens FROM usage_rollup "
                    "WHERE agent_id = 'a2'")).one() == (2, 75, 7)
        finally:
            engine.dispose()
