"""Each budget function's current body is one file.

The PostgreSQL functions' bodies were Python strings, each redefined by whichever migration
touched it last. They are files now, `[legacy/]sql/<name>.v<version>.sql`, and the older
migrations load the versions they installed then. This one installs the current version of
each (the bodies 0008 left, so downgrade has nothing to restore); a change to a function is
a new file version and a migration that installs it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import legacy_install

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT = (("llmgw_reserve", 1), ("llmgw_lock_batch_counters", 1),
           ("llmgw_make_batch_counters", 1), ("llmgw_reserve_many", 2), ("llmgw_take_back", 1),
           ("llmgw_drop_reconciled", 1), ("llmgw_settle", 3), ("llmgw_settle_many", 2),
           ("usage_events_rollup", 2))


def upgrade() -> None:
    legacy_install(op.get_bind(), *CURRENT)


def downgrade() -> None:
    pass  # the same bodies as 0008 and 0007 left
