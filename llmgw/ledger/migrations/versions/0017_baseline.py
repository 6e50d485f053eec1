"""The ledger as it stands at 0017, created in one step (the baseline).

A new ledger starts here. Ledgers made before the squash climb the old chain (`legacy/`,
0001..0017) and arrive at the same schema under the same id; tests/ledger/
test_baseline_schema.py holds the two equal on SQLite and PostgreSQL. What each table is
for: llmgw/ledger/models.py. Money is integer micro-dollars, times naive UTC.

PostgreSQL's functions are the files in `sql/` named in FUNCTIONS; SQLite has none and
runs the same rules as statements (llmgw/ledger/budgets/sqlite.py), with the rollup kept by
a row trigger (`sql/usage_events_rollup_sqlite.v1.sql`).

Revision ID: 0017
Revises:
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from llmgw.ledger.migrations.sqlfiles import install, load

revision: str = "0017"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
_BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ZERO = sa.text("0")
_OPEN = sa.text("state = 'open'")

# PostgreSQL: the budget functions and the rollup trigger's function (name, file version).
FUNCTIONS = (("llmgw_reserve", 1), ("llmgw_lock_batch_counters", 1),
             ("llmgw_make_batch_counters", 1), ("llmgw_reserve_many", 2),
             ("llmgw_take_back", 1), ("llmgw_drop_reconciled", 1), ("llmgw_settle_many", 4),
             ("usage_events_rollup", 3))
_PG_TRIGGER = ("CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events "
               "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
               "EXECUTE FUNCTION usage_events_rollup()")


def _usage_events() -> None:
    """One row per attempt of every request."""
    op.create_table(
        "usage_events",
        sa.Column("id", _BIG_INT_PK, primary_key=True, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=False), nullable=False),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("agent_type", sa.String(200), nullable=True),
        sa.Column("project_id", sa.String(200), nullable=False),
        sa.Column("model_group", sa.String(200), nullable=False),
        sa.Column("deployment_id", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("model", sa.String(300), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_class", sa.String(100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("saved_micros", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("requested_model", sa.String(200), nullable=True),
        sa.Column("dialect", sa.String(16), nullable=True),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default=_ZERO),
        sa.Column("cache_write_1h_tokens", sa.Integer(), nullable=False, server_default=_ZERO),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False, server_default=_ZERO),
        sa.Column("rates", sa.JSON(), nullable=True),
        sa.UniqueConstraint("request_id", "attempt", name="uq_usage_events_request_attempt"),
        sa.CheckConstraint("status IN ('ok', 'error', 'cached', 'refused', 'partial')",
                           name="ck_usage_events_status"),
        sa.CheckConstraint("cost_micros >= 0", name="ck_usage_events_cost_nonneg"),
    )
    op.create_index("ix_usage_events_project_ts", "usage_events", ["project_id", "ts"])
    op.create_index("ix_usage_events_agent_ts", "usage_events", ["agent_id", "ts"])
    op.create_index("ix_usage_events_ts", "usage_events", ["ts"])
    op.create_index("ix_usage_events_session", "usage_events", ["session_id", "project_id", "ts"])


def _rollup() -> None:
    """Per-day report totals, kept by the trigger (see the SQL files for the rule)."""
    big = sa.BigInteger()
    measures = ("attempts", "errors", "cached", "refused", "prompt_tokens", "completion_tokens",
                "cost_micros", "saved_micros", "req_first", "req_agent_type", "req_model_group",
                "req_deployment", "req_provider", "req_model")
    kinds = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")
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
        *(sa.Column(name, big, nullable=False) for name in measures),
        *(sa.Column(name, big, nullable=False, server_default=_ZERO) for name in kinds),
        sqlite_with_rowid=False,  # the primary key is the table: no second b-tree to write
    )
    op.create_table("usage_split_requests",
                    sa.Column("request_id", sa.String(64), primary_key=True))


def _budgets() -> None:
    """Limits, per-window spend, in-flight holds."""
    op.create_table(
        "budgets",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_id", sa.String(200), primary_key=True),
        sa.Column("period", sa.String(8), primary_key=True),
        sa.Column("limit_micros", sa.BigInteger(), nullable=False),
        sa.Column("warn_ratio", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.CheckConstraint("limit_micros >= 0", name="ck_budgets_limit_nonneg"),
        sa.CheckConstraint("warn_ratio > 0 AND warn_ratio <= 1", name="ck_budgets_warn_ratio"),
        sa.CheckConstraint("period IN ('day', 'month', 'request', 'total')",
                           name="ck_budgets_period"),
    )
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_id", sa.String(200), primary_key=True),
        sa.Column("period", sa.String(8), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=False), primary_key=True),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.CheckConstraint("spent_micros >= 0", name="ck_budget_counters_spent_nonneg"),
        sa.CheckConstraint("reserved_micros >= 0", name="ck_budget_counters_reserved_nonneg"),
    )
    op.create_table(
        "reservations",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("settled_micros", sa.BigInteger(), nullable=True),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("agent_type", sa.String(200), nullable=True),
        sa.Column("project_id", sa.String(200), nullable=False),
        sa.Column("model_group", sa.String(200), nullable=False),
        sa.Column("counters", sa.JSON(), nullable=False),
        sa.CheckConstraint("state IN ('open', 'settled', 'released', 'reconciled')",
                           name="ck_reservations_state"),
        sa.CheckConstraint("amount_micros >= 0", name="ck_reservations_amount_nonneg"),
    )
    # Only the open ones (what a reconcile looks for): a settle writes no index entry.
    op.create_index("ix_reservations_open_created", "reservations", ["created_at"],
                    postgresql_where=_OPEN, sqlite_where=_OPEN)


def _api_keys() -> None:
    """Keys of the network fronts, stored as hashes only, with their own limits."""
    op.create_table(
        "api_keys",
        sa.Column("id", _BIG_INT_PK, primary_key=True, autoincrement=True, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("project_id", sa.String(200), nullable=True),
        sa.Column("agent_id", sa.String(200), nullable=True),
        sa.Column("agent_type", sa.String(200), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("rotated_to", sa.BigInteger(), nullable=True),
        sa.Column("lineage_id", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("hash", name="uq_api_keys_hash"),
        sa.CheckConstraint("admin OR project_id IS NOT NULL", name="ck_api_keys_scope"),
        sa.CheckConstraint("(rpm IS NULL OR rpm > 0) AND (tpm IS NULL OR tpm > 0) "
                           "AND (max_parallel IS NULL OR max_parallel > 0)",
                           name="ck_api_keys_limits_positive"),
    )
    op.create_index("ix_api_keys_project", "api_keys", ["project_id"])


def _stored_responses() -> None:
    """Responses-API responses kept for `previous_response_id`, until `expires_at`."""
    op.create_table(
        "stored_responses",
        sa.Column("project_id", sa.String(200), nullable=False),
        sa.Column("id", sa.String(400), nullable=False),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("model_group", sa.String(200), nullable=False),
        sa.Column("deployment_id", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_stored_responses"),
    )
    op.create_index("ix_stored_responses_expires", "stored_responses", ["expires_at"])


def upgrade() -> None:
    _usage_events()
    _rollup()
    _budgets()
    _api_keys()
    _stored_responses()
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        install(bind, *FUNCTIONS)
        bind.exec_driver_sql(_PG_TRIGGER)
    else:
        bind.exec_driver_sql(load("usage_events_rollup_sqlite", 1))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP TRIGGER usage_events_rollup ON usage_events")
        for name, _ in FUNCTIONS:
            bind.exec_driver_sql(f"DROP FUNCTION {name}")
    else:
        bind.exec_driver_sql("DROP TRIGGER usage_events_rollup")
    for table in ("stored_responses", "api_keys", "reservations", "budget_counters", "budgets",
                  "usage_split_requests", "usage_rollup", "usage_events"):
        op.drop_table(table)  # their indexes go with them
