"""Alembic owns the schema: it must build exactly the model, undo it, and be checked at start."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine, parse_url, safe_url
from llmgw.ledger.migrate import current, downgrade, ensure_current, head, migrations_dir, upgrade
from llmgw.ledger.models import Base, UsageEvent

INDEXES = {
    "ix_usage_events_project_ts": ["project_id", "ts"],
    "ix_usage_events_agent_ts": ["agent_id", "ts"],
    "ix_usage_events_ts": ["ts"],
    "ix_usage_events_session": ["session_id", "project_id", "ts"],
}


def _schema(url: str) -> dict[str, object]:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        if not insp.has_table("usage_events"):
            return {"tables": set(insp.get_table_names())}
        return {
            "tables": set(insp.get_table_names()),
            "columns": {c["name"]: c["nullable"] for c in insp.get_columns("usage_events")},
            # PostgreSQL also lists the unique constraint's own index: not a separate index.
            "indexes": {i["name"]: i["column_names"] for i in insp.get_indexes("usage_events")
                        if not i.get("duplicates_constraint")},
            "uniques": {u["name"]: u["column_names"]
                        for u in insp.get_unique_constraints("usage_events")},
            "checks": {c["name"] for c in insp.get_check_constraints("usage_events")},
            "pk": insp.get_pk_constraint("usage_events")["constrained_columns"],
        }
    finally:
        engine.dispose()


def _model_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


LEDGER_TABLES = {"usage_events", "budgets", "budget_counters", "reservations", "usage_rollup",
                 "usage_split_requests", "api_keys", "stored_responses"}


def test_head_is_the_baseline_or_later_and_folders_found() -> None:
    assert head() >= "0017"
    assert (migrations_dir() / "versions" / "0017_baseline.py").is_file()
    assert (migrations_dir() / "legacy" / "0001_usage_events.py").is_file()
    assert (migrations_dir() / "legacy" / "0015_token_kinds.py").is_file()
    assert (migrations_dir() / "legacy" / "0017_key_limits.py").is_file()


def test_upgrade_downgrade_upgrade(ledger_url: str) -> None:
    assert current(ledger_url) is None
    upgrade(ledger_url)
    assert current(ledger_url) == head()
    schema = _schema(ledger_url)
    assert LEDGER_TABLES | {"alembic_version"} <= schema["tables"]  # type: ignore[operator]
    model_columns = {c.name: c.nullable for c in UsageEvent.__table__.columns}
    assert schema["columns"] == model_columns
    assert schema["indexes"] == INDEXES
    assert schema["uniques"] == {"uq_usage_events_request_attempt": ["request_id", "attempt"]}
    assert schema["checks"] == {"ck_usage_events_status", "ck_usage_events_cost_nonneg"}
    assert schema["pk"] == ["id"]
    # Alembic's own comparison: the migrated schema is the model (types, indexes, uniques).
    assert _model_diff(ledger_url) == []

    downgrade(ledger_url, "base")
    assert current(ledger_url) is None
    assert not LEDGER_TABLES & _schema(ledger_url)["tables"]  # type: ignore[operator]

    upgrade(ledger_url)
    assert current(ledger_url) == head()
    assert _schema(ledger_url)["indexes"] == INDEXES


def _reservation_indexes(url: str) -> dict[str, str]:
    """The reservations table's indexes: name -> definition."""
    engine = make_engine(url)
    sql = ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'reservations'"
           if engine.dialect.name == "postgresql" else
           "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reservations'")
    try:
        with engine.connect() as conn:
            return {r[0]: r[1] or "" for r in conn.execute(text(sql))}
    finally:
        engine.dispose()


def test_0012_indexes_only_the_open_reservations_and_steps_back(ledger_url: str) -> None:
    upgrade(ledger_url)
    indexes = _reservation_indexes(ledger_url)
    assert "ix_reservations_state_created" not in indexes
    assert "created_at" in indexes["ix_reservations_open_created"]
    assert "WHERE" in indexes["ix_reservations_open_created"].upper()
    assert "'open'" in indexes["ix_reservations_open_created"]
    assert _model_diff(ledger_url) == []
    downgrade(ledger_url, "0011")
    indexes = _reservation_indexes(ledger_url)
    assert "ix_reservations_open_created" not in indexes
    assert "ix_reservations_state_created" in indexes
    upgrade(ledger_url)
    assert "ix_reservations_open_created" in _reservation_indexes(ledger_url)


def _stored_responses(url: str) -> dict[str, object] | None:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        if not insp.has_table("stored_responses"):
            return None
        return {"columns": {c["name"]: c["nullable"] for c in insp.get_columns("stored_responses")},
                "pk": insp.get_pk_constraint("stored_responses")["constrained_columns"],
                "indexes": {i["name"]: i["column_names"]
                            for i in insp.get_indexes("stored_responses")}}
    finally:
        engine.dispose()


def test_0014_adds_stored_responses_and_steps_back(ledger_url: str) -> None:
    from llmgw.ledger.models import StoredResponseRow

    upgrade(ledger_url)
    table = _stored_responses(ledger_url)
    assert table == {
        "columns": {c.name: c.nullable for c in StoredResponseRow.__table__.columns},
        "pk": ["project_id", "id"],
        "indexes": {"ix_stored_responses_expires": ["expires_at"]}}
    nullable = {c.name for c in StoredResponseRow.__table__.columns if c.nullable}
    assert nullable == {"deployment_id", "provider"}
    assert _model_diff(ledger_url) == []
    downgrade(ledger_url, "0013")
    assert _stored_responses(ledger_url) is None
    assert "usage_events" in _schema(ledger_url)["tables"]  # type: ignore[operator]
    upgrade(ledger_url)
    assert current(ledger_url) == head()
    assert _stored_responses(ledger_url) == table


def _functions(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'llmgw_%'"))}
    finally:
        engine.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_0004_adds_the_budget_functions_and_steps_back(ledger_url: str) -> None:
    upgrade(ledger_url, "0004")
    assert {"llmgw_reserve", "llmgw_settle"} <= _functions(ledger_url)
    downgrade(ledger_url, "0003")
    assert not {"llmgw_reserve", "llmgw_settle"} & _functions(ledger_url)
    upgrade(ledger_url, "0004")
    assert {"llmgw_reserve", "llmgw_settle"} <= _functions(ledger_url)


BATCH_FUNCTIONS = {"llmgw_reserve_many", "llmgw_lock_batch_counters"}


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_0005_adds_the_batch_functions_and_steps_back(ledger_url: str) -> None:
    upgrade(ledger_url)
    assert BATCH_FUNCTIONS <= _functions(ledger_url)
    downgrade(ledger_url, "0004")
    assert not BATCH_FUNCTIONS & _functions(ledger_url)
    assert {"llmgw_reserve", "llmgw_settle"} <= _functions(ledger_url)
    upgrade(ledger_url)
    assert BATCH_FUNCTIONS <= _functions(ledger_url)


def _settle_body(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'llmgw_settle'")
                                ).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_0006_batches_settles_orders_locks_and_steps_back(ledger_url: str) -> None:
    def rows_last(body: str) -> bool:
        return body.index("INSERT INTO usage_events") > body.index("UPDATE budget_counters")

    upgrade(ledger_url, "0010")
    assert {"llmgw_settle_many", "llmgw_make_batch_counters"} <= _functions(ledger_url)
    assert rows_last(_settle_body(ledger_url))
    downgrade(ledger_url, "0005")
    assert not {"llmgw_settle_many", "llmgw_make_batch_counters"} & _functions(ledger_url)
    assert not rows_last(_settle_body(ledger_url))  # 0004's order again
    assert BATCH_FUNCTIONS <= _functions(ledger_url)
    upgrade(ledger_url)
    assert "llmgw_settle_many" in _functions(ledger_url)


def test_0001_to_0002_keeps_usage_rows_and_steps_back(ledger_url: str) -> None:
    upgrade(ledger_url, "0001")
    engine = make_engine(ledger_url)
    try:
        with engine.begin() as conn:  # 0001's columns (cache reads were `cached_tokens`)
            conn.execute(text(
                "INSERT INTO usage_events (request_id, attempt, ts, agent_id, project_id, "
                "model_group, status, prompt_tokens, completion_tokens, cached_tokens, "
                "cost_micros, saved_micros, stream) VALUES ('old', 1, :ts, 'a', 'p', 'g', 'ok', "
                "1, 2, 0, 3, 0, FALSE)"), {"ts": datetime(2026, 11, 1)})
        upgrade(ledger_url, "0002")
        assert current(ledger_url) == "0002"
        with engine.connect() as conn:
            assert conn.execute(select(UsageEvent.__table__.c.cost_micros)).scalar_one() == 3
        downgrade(ledger_url, "0001")
        tables = _schema(ledger_url)["tables"]
        assert "usage_events" in tables and "budgets" not in tables  # type: ignore[operator]
    finally:
        engine.dispose()


def test_constraints_are_enforced(ledger_engine) -> None:  # type: ignore[no-untyped-def]
    row = dict(request_id="r", attempt=1, ts=datetime(2026, 11, 1), agent_id="a",
               project_id="p", model_group="g", status="ok", prompt_tokens=0,
               completion_tokens=0, cache_read_tokens=0, cost_micros=0, saved_micros=0,
               stream=False)
    table = UsageEvent.__table__
    with ledger_engine.begin() as conn:
        conn.execute(insert(table), [row])
        ids = conn.execute(table.select()).all()
    assert len(ids) == 1 and ids[0].id >= 1  # autoincrement works on both backends
    for bad in ({"attempt": 1}, {"attempt": 2, "status": "bogus"},
                {"attempt": 3, "cost_micros": -1}):
        with pytest.raises(IntegrityError), ledger_engine.begin() as conn:
            conn.execute(insert(table), [{**row, **bad}])


def test_ensure_current(ledger_url: str) -> None:
    with pytest.raises(LedgerError) as info:
        ensure_current(ledger_url)
    assert "llmgw db upgrade" in str(info.value)
    upgrade(ledger_url)
    ensure_current(ledger_url)
    downgrade(ledger_url, "base")
    with pytest.raises(LedgerError, match="no schema"):
        ensure_current(ledger_url)


def test_ensure_current_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nope/ledger.db"
    with pytest.raises(LedgerError, match="No ledger database"):
        ensure_current(url)
    assert current(url) is None
    assert not (tmp_path / "nope" / "ledger.db").exists()


def test_unknown_revision_in_the_database(migrated_ledger_url: str) -> None:
    engine = make_engine(migrated_ledger_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    with pytest.raises(LedgerError, match="newer llmgw"):
        ensure_current(migrated_ledger_url)


def test_unreachable_postgres_hides_password(tmp_path: Path) -> None:
    url = f"postgresql://alice:s3cret-pw@/ledger?host={tmp_path}"
    with pytest.raises(LedgerError) as info:
        ensure_current(url)
    text = str(info.value)
    assert "Cannot connect" in text and "s3cret-pw" not in text and "***" in text


# --- engine -------------------------------------------------------------------------------


def test_sqlite_engine_pragmas_and_parent_dir(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/a/b/ledger.db")
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == 30_000
            assert pragma("foreign_keys") == 1
            # MEMORY: a big batch's savepoint journal never spills to a file on disk
            assert pragma("temp_store") == 2
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b" / "ledger.db").exists()


def test_in_memory_sqlite_works() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize("url", ["postgresql://u:p@h/db", "postgres://u:p@h/db",
                                 "postgresql+psycopg://u:p@h/db"])
def test_postgres_urls_get_psycopg(url: str) -> None:
    assert parse_url(url).drivername == "postgresql+psycopg"
    assert safe_url(url) == "postgresql+psycopg://u:***@h/db"


def test_postgres_engine_pool(postgres_url: str) -> None:
    engine = make_engine(postgres_url, pool_size=3)
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced(postgres_url: str) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    killer = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with killer.connect() as conn:  # the server (or a proxy) drops the idle connection
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    finally:
        engine.dispose()
        killer.dispose()


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "not a url :// at all"])
def test_bad_urls_are_ledger_errors_without_the_text(url: str) -> None:
    with pytest.raises(LedgerError) as info:
        make_engine(url)
    assert "p@h" not in str(info.value)


# --- PostgreSQL function bodies from llmgw/ledger/sql ---------------------------------------


def _body(sql: str) -> str:
    """The body between the outer $$ of a CREATE FUNCTION file."""
    return sql.split("$$", 1)[1].rsplit("$$", 1)[0]


def _rollup_function(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT prosrc FROM pg_proc "
                                     "WHERE proname = 'usage_events_rollup'")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_0007_installs_the_rollup_function_from_its_file_and_steps_back(ledger_url: str) -> None:
    import importlib.util

    from llmgw.ledger.migrations.sqlfiles import legacy_load as load

    spec = importlib.util.spec_from_file_location(
        "rollup_0003", migrations_dir() / "legacy" / "0003_usage_rollup.py")
    assert spec is not None and spec.loader is not None
    rollup_0003 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rollup_0003)
    # v1 is 0003's function as 0003 builds it: a downgrade restores exactly what was there.
    assert _body(load("usage_events_rollup", 1)) == _body(rollup_0003.trigger_ddl("postgresql")[0])

    upgrade(ledger_url, "0014")
    assert _rollup_function(ledger_url) == _body(load("usage_events_rollup", 2))
    downgrade(ledger_url, "0006")
    assert _rollup_function(ledger_url) == _body(load("usage_events_rollup", 1))
    upgrade(ledger_url, "0014")
    assert _rollup_function(ledger_url) == _body(load("usage_events_rollup", 2))
    upgrade(ledger_url)  # 0015: every token kind
    assert _rollup_function(ledger_url) == _body(load("usage_events_rollup", 3))


@pytest.mark.parametrize("version", [2, 3])
def test_the_rollup_functions_two_plans_run_the_same_statements(version: int) -> None:
    """v2 and v3 run each statement as written (a cached plan) or through EXECUTE (planned for
    a bulk statement's rows): both copies must stay the same SQL."""
    import re

    from llmgw.ledger.migrations.sqlfiles import legacy_load as load

    body = _body(load("usage_events_rollup", version))
    bulk, small = body.split("\n    ELSE\n", 1)
    dynamic = re.findall(r"EXECUTE \$(\w+)\$(.*?)\$\1\$;", bulk, re.S)
    static = [s for s in small.split("END IF;")[0].split(";") if s.strip()]
    assert [name for name, _ in dynamic] == ["split", "rollup"]

    def words(sql: str) -> list[str]:
        return sql.split()

    assert [words(sql) for _, sql in dynamic] == [words(sql) for sql in static]


def _latest_files() -> dict[str, int]:
    """Each function of the SQL folders (sql/, legacy/sql/) and its latest version."""
    from llmgw.ledger.migrations.sqlfiles import folder

    latest: dict[str, int] = {}
    for entry in (*folder("sql").iterdir(), *folder("legacy/sql").iterdir()):
        name, version, ext = entry.name.rsplit(".", 2)
        assert ext == "sql" and version.startswith("v"), entry.name
        latest[name] = max(latest.get(name, 0), int(version[1:]))
    return latest


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_each_functions_latest_file_is_the_one_installed_after_upgrade(ledger_url: str) -> None:
    from llmgw.ledger.migrations.sqlfiles import legacy_load as load

    latest = _latest_files()
    assert {"llmgw_reserve", "llmgw_settle", "llmgw_reserve_many", "llmgw_settle_many",
            "llmgw_take_back", "llmgw_drop_reconciled", "llmgw_lock_batch_counters",
            "llmgw_make_batch_counters", "usage_events_rollup"} <= latest.keys()
    retired = latest.pop("llmgw_settle")  # 0011: llmgw_settle_many is the one settle
    latest.pop("usage_events_rollup_sqlite")  # SQLite's trigger
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        with engine.connect() as conn:
            installed = dict(conn.execute(text(  # type: ignore[arg-type]
                "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public'")).all())
    finally:
        engine.dispose()
    for name, version in latest.items():
        assert installed.get(name) == _body(load(name, version)), f"{name}.v{version}.sql"
    assert "llmgw_settle" not in installed
    downgrade(ledger_url, "0010")  # and back: the body 0008 installed
    assert _functions(ledger_url) >= {"llmgw_settle"}
    assert _settle_body(ledger_url) == _body(load("llmgw_settle", retired))


def test_sql_files_load_by_name_and_version() -> None:
    from llmgw.ledger.migrations.sqlfiles import legacy_load, load

    assert "CREATE OR REPLACE FUNCTION usage_events_rollup()" in load("usage_events_rollup", 3)
    # A version only the old chain installed is retired: later revisions cannot load it.
    assert "CREATE OR REPLACE FUNCTION usage_events_rollup()" in legacy_load("usage_events_rollup", 2)
    with pytest.raises(FileNotFoundError, match="usage_events_rollup.v2.sql"):
        load("usage_events_rollup", 2)
    with pytest.raises(FileNotFoundError, match="usage_events_rollup.v99.sql"):
        legacy_load("usage_events_rollup", 99)
    for name, version in (("../models", 1), ("usage_events_rollup", 0),
                          ("usage_events_rollup", True)):
        with pytest.raises(ValueError, match="lower_snake_case"):
            load(name, version)  # type: ignore[arg-type]
