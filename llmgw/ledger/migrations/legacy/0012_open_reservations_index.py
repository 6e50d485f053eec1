"""Index only the open reservations: settling a request no longer writes an index entry.

`ix_reservations_state_created` held every reservation ever made, settled ones included, so
each settle moved an entry inside an index that grows with the ledger. What reads by state
(the start-up reconcile, `open_reservations`) asks for the open ones, which this partial index
holds alone: a settle deletes its entry and writes none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    op.create_index("ix_reservations_open_created", "reservations", ["created_at"],
                    postgresql_where=_OPEN, sqlite_where=_OPEN)
    op.drop_index("ix_reservations_state_created", table_name="reservations")


def downgrade() -> None:
    op.create_index("ix_reservations_state_created", "reservations", ["state", "created_at"])
    op.drop_index("ix_reservations_open_created", table_name="reservations")
