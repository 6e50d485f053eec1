"""Drop `llmgw_settle`: `llmgw_settle_many` is PostgreSQL's one settle.

The gateway settles through `llmgw_settle_many` only, a lone settle being a batch of one, so
the single-call function was a second copy of the settle rule that nothing called. A change to
what settling means is now made in one file, `llmgw/ledger/migrations/sql/llmgw_settle_many.v*.sql`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import drop, legacy_install

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop(op.get_bind(), "llmgw_settle")


def downgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_settle", 3))
