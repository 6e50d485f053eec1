"""Budgets per agent run: a `budgets` rule may have period `total` (scope `session`: the cap
on one run, `llmgw budgets set --session S --total-usd X`). Counters need nothing new: a run's
counter is an ordinary `budget_counters` row whose window start is fixed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_budgets_period"
_BEFORE = "period IN ('day', 'month', 'request')"
_AFTER = "period IN ('day', 'month', 'request', 'total')"


def _check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode copies the table with the new one.
    with op.batch_alter_table("budgets", recreate="auto") as batch:
        batch.drop_constraint(_NAME, type_="check")
        batch.create_check_constraint(_NAME, condition)


def upgrade() -> None:
    _check(_AFTER)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM budgets WHERE period = 'total'"))  # rules 0015 cannot hold
    _check(_BEFORE)
