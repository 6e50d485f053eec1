"""usage_rollup, usage_split_requests: per-day report totals kept up to date by a trigger.

`llmgw usage report` must answer over millions of ledger rows in well under a second, so
it reads a per-day rollup instead of scanning `usage_events`. A trigger on `usage_events`
keeps the rollup exact whatever writes the rows (gateway, budget settle, reconcile, tests):

- one rollup row per (project, agent, day, agent_type, model_group, deployment, provider,
  model); NULL keys are stored as '' with a bit in `null_keys` (1 agent_type, 2 deployment,
  4 provider, 8 model), so the primary key works as an upsert target on both databases;
- the additive measures are plain sums;
- "requests" is a distinct count, so each row carries credits instead: `req_first` is 1 for
  the first row (lowest id) of its request, `req_<column>` is 1 for the first row of its
  request with that column's value. Summed over the rows of one key, a request counts once;
- a request whose rows differ in day, project or agent would count once per day (or be cut
  by a --project/--agent filter), so it is listed in `usage_split_requests` and the report
  counts it from `usage_events` (rare: a gateway writes one request's rows together).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Nullable key columns of usage_events, with their bit in usage_rollup.null_keys.
NULLABLE_KEYS = (("agent_type", 1), ("deployment_id", 2), ("provider", 4), ("model", 8))
KEY_COLUMNS = ("project_id", "agent_id", "day", "agent_type", "model_group", "deployment_id",
               "provider", "model", "null_keys")
MEASURES = ("attempts", "errors", "cached", "refused", "prompt_tokens", "completion_tokens",
            "cost_micros", "saved_micros")
# req_first counts requests by project, agent, day and in the totals; req_<column> by column.
CREDITS = (("req_first", None), ("req_agent_type", "agent_type"),
           ("req_model_group", "model_group"), ("req_deployment", "deployment_id"),
           ("req_provider", "provider"), ("req_model", "model"))


def _dialect_sql(dialect: str) -> tuple[str, str]:
    """(the UTC day of a timestamp column, a NULL-safe equality) for `dialect`."""
    if dialect == "postgresql":
        return "CAST({}.ts AS DATE)", "IS NOT DISTINCT FROM"
    return "date({}.ts)", "IS"  # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff'


def rollup_upsert_sql(dialect: str, source: str) -> str:
    """Add the rows of `source` (aliased n) to usage_rollup. Credits look only at rows with a
    lower id, so each credit goes to exactly one row whatever order the rows arrive in."""
    day, same = _dialect_sql(dialect)
    keys = ["n.project_id", "n.agent_id", day.format("n"), "COALESCE(n.agent_type, '')",
            "n.model_group", "COALESCE(n.deployment_id, '')", "COALESCE(n.provider, '')",
            "COALESCE(n.model, '')",
            " + ".join(f"CASE WHEN n.{c} IS NULL THEN {bit} ELSE 0 END" for c, bit in NULLABLE_KEYS)]

    def count(condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    measures = [count("n.status IN ('ok', 'error', 'partial')"), count("n.status = 'error'"),
                count("n.status = 'cached'"), count("n.status = 'refused'"),
                "SUM(n.prompt_tokens)", "SUM(n.completion_tokens)", "SUM(n.cost_micros)",
                "SUM(n.saved_micros)"]
    for _, column in CREDITS:
        same_value = f" AND e.{column} {same} n.{column}" if column else ""
        measures.append(count(f"NOT EXISTS (SELECT 1 FROM usage_events e WHERE "
                              f"e.request_id = n.request_id AND e.id < n.id{same_value})"))
    names = [*KEY_COLUMNS, *MEASURES, *(name for name, _ in CREDITS)]
    positions = ", ".join(str(i + 1) for i in range(len(KEY_COLUMNS)))
    updates = ", ".join(f"{m} = usage_rollup.{m} + excluded.{m}"
                        for m in names[len(KEY_COLUMNS):])
    # ORDER BY: concurrent writers lock rollup rows in one order (no deadlock on PostgreSQL).
    return (f"INSERT INTO usage_rollup ({', '.join(names)}) "
            f"SELECT {', '.join(keys + measures)} FROM {source} n WHERE true "
            f"GROUP BY {positions} ORDER BY {positions} "
            f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}")


def split_requests_sql(dialect: str, source: str) -> str:
    """List the requests of `source` whose rows differ in day, project or agent."""
    day, _ = _dialect_sql(dialect)
    return ("INSERT INTO usage_split_requests (request_id) SELECT DISTINCT n.request_id "
            f"FROM {source} n WHERE EXISTS (SELECT 1 FROM usage_events e WHERE "
            f"e.request_id = n.request_id AND e.id <> n.id AND ({day.format('e')} <> "
            f"{day.format('n')} OR e.project_id <> n.project_id OR e.agent_id <> n.agent_id)) "
            "ON CONFLICT (request_id) DO NOTHING")


def sqlite_row_upsert_sql() -> str:
    """rollup_upsert_sql for SQLite's row trigger: the same values from NEW, with one look at
    the request's earlier rows (an index seek) for all the credits."""
    keys = ["NEW.project_id", "NEW.agent_id", "date(NEW.ts)", "COALESCE(NEW.agent_type, '')",
            "NEW.model_group", "COALESCE(NEW.deployment_id, '')", "COALESCE(NEW.provider, '')",
            "COALESCE(NEW.model, '')",
            " + ".join(f"(NEW.{c} IS NULL) * {bit}" for c, bit in NULLABLE_KEYS)]
    measures = ["NEW.status IN ('ok', 'error', 'partial')", "NEW.status = 'error'",
                "NEW.status = 'cached'", "NEW.status = 'refused'", "NEW.prompt_tokens",
                "NEW.completion_tokens", "NEW.cost_micros", "NEW.saved_micros"]
    seen = []
    for name, column in CREDITS:
        measures.append(f"COALESCE(p.{name}, 0) = 0")
        seen.append(f"SUM(e.{column} IS NEW.{column}) AS {name}" if column else
                    f"COUNT(*) AS {name}")
    names = [*KEY_COLUMNS, *MEASURES, *(name for name, _ in CREDITS)]
    updates = ", ".join(f"{m} = usage_rollup.{m} + excluded.{m}"
                        for m in names[len(KEY_COLUMNS):])
    return (f"INSERT INTO usage_rollup ({', '.join(names)}) "
            f"SELECT {', '.join(keys + measures)} FROM (SELECT {', '.join(seen)} "
            "FROM usage_events e WHERE e.request_id = NEW.request_id AND e.id < NEW.id) p "
            f"WHERE true ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}")


def trigger_ddl(dialect: str) -> list[str]:
    """SQLite: a row trigger; PostgreSQL: a statement trigger over the statement's new rows,
    so a multi-row insert or a COPY upserts each rollup row once."""
    if dialect == "postgresql":
        body = f"{split_requests_sql(dialect, 'new_rows')}; {rollup_upsert_sql(dialect, 'new_rows')}"
        return [
            "CREATE FUNCTION usage_events_rollup() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body}; RETURN NULL; END $$",
            "CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION usage_events_rollup()",
        ]
    split = ("INSERT INTO usage_split_requests (request_id) SELECT NEW.request_id WHERE EXISTS "
             "(SELECT 1 FROM usage_events e WHERE e.request_id = NEW.request_id AND "
             "e.id <> NEW.id AND (date(e.ts) <> date(NEW.ts) OR e.project_id <> NEW.project_id "
             "OR e.agent_id <> NEW.agent_id)) ON CONFLICT (request_id) DO NOTHING")
    return [
        "CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events BEGIN "
        f"{split}; {sqlite_row_upsert_sql()}; END"
    ]


def drop_trigger_ddl(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return ["DROP TRIGGER IF EXISTS usage_events_rollup ON usage_events",
                "DROP FUNCTION IF EXISTS usage_events_rollup()"]
    return ["DROP TRIGGER IF EXISTS usage_events_rollup"]


def upgrade() -> None:
    big = sa.BigInteger()
    op.create_table(
        "usage_rollup",
        sa.Column("project_id", sa.String(200), primary_key=True),
        sa.Column("agent_id", sa.String(200), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("agent_type", sa.String(200), primary_key=True),
        sa.Column("model_group", sa.String(200), primary_key=True),
        sa.Column("deployment_id", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(300), primary_key=True),
        sa.Column("null_keys", sa.SmallInteger(), primary_key=True),
        *(sa.Column(name, big, nullable=False) for name in MEASURES),
        *(sa.Column(name, big, nullable=False) for name, _ in CREDITS),
        sqlite_with_rowid=False,  # the primary key is the table: no second b-tree to write
    )
    op.create_table(
        "usage_split_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
    )
    dialect = op.get_bind().dialect.name
    # Rows written before this revision: the same statements over the whole table.
    op.execute(split_requests_sql(dialect, "usage_events"))
    op.execute(rollup_upsert_sql(dialect, "usage_events"))
    for sql in trigger_ddl(dialect):
        op.execute(sql)


def downgrade() -> None:
    for sql in drop_trigger_ddl(op.get_bind().dialect.name):
        op.execute(sql)
    op.drop_table("usage_split_requests")
    op.drop_table("usage_rollup")
