"""A late settle after reconcile wins cleanly.

`llmgw db reconcile` books an open hold at its reserved amount, with a `Reconciled` ledger
row. If the hold's request was still in flight, its settle used to find the reservation
closed, move nothing and then fail on the row's (request_id, attempt): a paid answer became
an error and the ledger kept the worst case. Now the settle that finds its reservation
reconciled takes it back, in its one transaction:
- the reservation gets the settle's state and amount (`llmgw_take_back`);
- each counter's spent loses the amount booked and gains the real one (its reserved went
  with the reconcile);
- the `Reconciled` row is deleted and taken out of the rollup (`llmgw_drop_reconciled`),
  then the request's own rows are written as usual.
`llmgw_settle` and `llmgw_settle_many` are redefined with that path (same arguments and
results); locks stay in the one order: reservations, counters, rollup rows (sorted).
SQLite does the same in `BudgetStore._settle_alone`.
The bodies are the files `[legacy/]sql/<name>.v<version>.sql` named below (frozen).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import drop, legacy_install

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_take_back", 1), ("llmgw_drop_reconciled", 1), ("llmgw_settle", 3),
            ("llmgw_settle_many", 2))


def downgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_settle_many", 1), ("llmgw_settle", 2))
    drop(op.get_bind(), "llmgw_drop_reconciled", "llmgw_take_back")
