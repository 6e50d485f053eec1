"""Every token kind in the rollup; cache reads named as such; the rates a row was priced at.

- `usage_events.cached_tokens` is renamed `cache_read_tokens` (next to 0013's
  `cache_write_tokens`, `cache_write_1h_tokens`, `reasoning_tokens`);
- `usage_events.rates` (JSON, NULL when unknown): the per-token USD rates the attempt was
  priced at, as decimal strings (`input`, `output`, `cache_read`, `cache_write`,
  `cache_write_1h`);
- `usage_rollup` gains the sums `cache_read_tokens`, `cache_write_tokens`,
  `cache_write_1h_tokens`, `reasoning_tokens` (0 by default), filled for the rows already
  there by one grouped pass over usage_events (linear), and kept by the trigger from here on:
  SQLite's row trigger is built anew (0003's, with the four sums), PostgreSQL's function is
  `usage_events_rollup` version 3 (migrations/sql/usage_events_rollup.v3.sql);
- PostgreSQL's settle names its insert columns: `llmgw_settle_many` version 4 writes
  `cache_read_tokens` and `rates`.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from llmgw.ledger.migrations.sqlfiles import legacy_install

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")

# 0003's rollup, as its SQLite trigger adds a row (frozen here: a migration keeps what it did).
_NULLABLE_KEYS = (("agent_type", 1), ("deployment_id", 2), ("provider", 4), ("model", 8))
_KEY_COLUMNS = ("project_id", "agent_id", "day", "agent_type", "model_group", "deployment_id",
                "provider", "model", "null_keys")
_MEASURES = ("attempts", "errors", "cached", "refused", "prompt_tokens", "completion_tokens",
             "cost_micros", "saved_micros")
_CREDITS = (("req_first", None), ("req_agent_type", "agent_type"),
            ("req_model_group", "model_group"), ("req_deployment", "deployment_id"),
            ("req_provider", "provider"), ("req_model", "model"))
_SPLIT = ("INSERT INTO usage_split_requests (request_id) SELECT NEW.request_id WHERE EXISTS "
          "(SELECT 1 FROM usage_events e WHERE e.request_id = NEW.request_id AND "
          "e.id <> NEW.id AND (date(e.ts) <> date(NEW.ts) OR e.project_id <> NEW.project_id "
          "OR e.agent_id <> NEW.agent_id)) ON CONFLICT (request_id) DO NOTHING")


def sqlite_trigger(kinds: tuple[str, ...]) -> str:
    """SQLite's rollup trigger adding `kinds` too; with none it is 0003's, to the byte."""
    keys = ["NEW.project_id", "NEW.agent_id", "date(NEW.ts)", "COALESCE(NEW.agent_type, '')",
            "NEW.model_group", "COALESCE(NEW.deployment_id, '')", "COALESCE(NEW.provider, '')",
            "COALESCE(NEW.model, '')",
            " + ".join(f"(NEW.{c} IS NULL) * {bit}" for c, bit in _NULLABLE_KEYS)]
    measures = ["NEW.status IN ('ok', 'error', 'partial')", "NEW.status = 'error'",
                "NEW.status = 'cached'", "NEW.status = 'refused'", "NEW.prompt_tokens",
                "NEW.completion_tokens", "NEW.cost_micros", "NEW.saved_micros"]
    seen = []
    for name, column in _CREDITS:
        measures.append(f"COALESCE(p.{name}, 0) = 0")
        seen.append(f"SUM(e.{column} IS NEW.{column}) AS {name}" if column else
                    f"COUNT(*) AS {name}")
    measures += [f"NEW.{k}" for k in kinds]
    names = [*_KEY_COLUMNS, *_MEASURES, *(name for name, _ in _CREDITS), *kinds]
    updates = ", ".join(f"{m} = usage_rollup.{m} + excluded.{m}"
                        for m in names[len(_KEY_COLUMNS):])
    upsert = (f"INSERT INTO usage_rollup ({', '.join(names)}) "
              f"SELECT {', '.join(keys + measures)} FROM (SELECT {', '.join(seen)} "
              "FROM usage_events e WHERE e.request_id = NEW.request_id AND e.id < NEW.id) p "
              f"WHERE true ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET {updates}")
    return f"CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events BEGIN {_SPLIT}; {upsert}; END"


def backfill_sql(dialect: str) -> str:
    """The sums of every kind for the rollup rows already there: usage_events grouped once by
    the rollup's key (NULL keys as the trigger stores them), joined to its rows by that key."""
    day = "CAST(n.ts AS DATE)" if dialect == "postgresql" else "date(n.ts)"
    null_keys = " + ".join(f"CASE WHEN n.{c} IS NULL THEN {bit} ELSE 0 END"
                           for c, bit in _NULLABLE_KEYS)
    keys = ["n.project_id AS project_id", "n.agent_id AS agent_id", f"{day} AS day",
            "COALESCE(n.agent_type, '') AS agent_type", "n.model_group AS model_group",
            "COALESCE(n.deployment_id, '') AS deployment_id",
            "COALESCE(n.provider, '') AS provider", "COALESCE(n.model, '') AS model",
            f"{null_keys} AS null_keys"]
    sums = [f"SUM(n.{k}) AS {k}" for k in KINDS]
    positions = ", ".join(str(i + 1) for i in range(len(_KEY_COLUMNS)))
    any_kind = " OR ".join(f"SUM(n.{k}) <> 0" for k in KINDS)
    return (f"UPDATE usage_rollup SET {', '.join(f'{k} = a.{k}' for k in KINDS)} "
            f"FROM (SELECT {', '.join(keys + sums)} FROM usage_events n "
            f"GROUP BY {positions} HAVING {any_kind}) AS a "
            f"WHERE {' AND '.join(f'usage_rollup.{c} = a.{c}' for c in _KEY_COLUMNS)}")


def upgrade() -> None:
    bind = op.get_bind()
    # A plain RENAME COLUMN on both databases (SQLite's batch mode would rebuild the table and
    # lose its triggers); the SQLite trigger and PostgreSQL's rollup never named the column.
    bind.exec_driver_sql("ALTER TABLE usage_events RENAME COLUMN cached_tokens TO cache_read_tokens")
    op.add_column("usage_events", sa.Column("rates", sa.JSON(), nullable=True))
    for name in KINDS:
        op.add_column("usage_rollup", sa.Column(name, sa.BigInteger(), nullable=False,
                                                server_default=sa.text("0")))
    bind.exec_driver_sql(backfill_sql(bind.dialect.name))
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("DROP TRIGGER usage_events_rollup")
        bind.exec_driver_sql(sqlite_trigger(KINDS))
    legacy_install(bind, ("usage_events_rollup", 3), ("llmgw_settle_many", 4))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("DROP TRIGGER usage_events_rollup")
        bind.exec_driver_sql(sqlite_trigger(()))
    legacy_install(bind, ("usage_events_rollup", 2))
    for name in (*reversed(KINDS), "rates"):
        table = "usage_events" if name == "rates" else "usage_rollup"
        if bind.dialect.name == "sqlite":  # SQLite >= 3.35 drops a column in place
            bind.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {name}")
        else:
            op.drop_column(table, name)
    bind.exec_driver_sql("ALTER TABLE usage_events RENAME COLUMN cache_read_tokens TO cached_tokens")
    legacy_install(bind, ("llmgw_settle_many", 3))
