"""usage_events: one row per attempt of every request.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same as llmgw.ledger.models.BigIntPK: SQLite only auto-increments an INTEGER PRIMARY KEY.
_BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
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
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("saved_micros", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.UniqueConstraint("request_id", "attempt", name="uq_usage_events_request_attempt"),
        sa.CheckConstraint(
            "status IN ('ok', 'error', 'cached', 'refused', 'partial')",
            name="ck_usage_events_status",
        ),
        sa.CheckConstraint("cost_micros >= 0", name="ck_usage_events_cost_nonneg"),
    )
    op.create_index("ix_usage_events_project_ts", "usage_events", ["project_id", "ts"])
    op.create_index("ix_usage_events_agent_ts", "usage_events", ["agent_id", "ts"])
    op.create_index("ix_usage_events_ts", "usage_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_usage_events_ts", table_name="usage_events")
    op.drop_index("ix_usage_events_agent_ts", table_name="usage_events")
    op.drop_index("ix_usage_events_project_ts", table_name="usage_events")
    op.drop_table("usage_events")
