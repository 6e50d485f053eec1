"""stored_responses: Responses-API responses kept for `previous_response_id` continuations,
per project, until `expires_at` (the retention setting).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_index("ix_stored_responses_expires", table_name="stored_responses")
    op.drop_table("stored_responses")
