"""budgets, budget_counters, reservations: limits, per-window spend, in-flight holds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
        sa.CheckConstraint("period IN ('day', 'month', 'request')", name="ck_budgets_period"),
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
    op.create_index("ix_reservations_state_created", "reservations", ["state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_reservations_state_created", table_name="reservations")
    op.drop_table("reservations")
    op.drop_table("budget_counters")
    op.drop_table("budgets")
