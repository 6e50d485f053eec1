"""The rollup trigger stays linear in a bulk insert.

0003's trigger function asked, for each new row and each request credit, whether an earlier
row of its request existed: a correlated subquery per row, planned once per session. A plan
made while `usage_events` was small scans the table for every new row, so a COPY or an
import of N rows cost O(N x table). Version 2 of `usage_events_rollup()` (its body is in
migrations/legacy/sql/usage_events_rollup.v2.sql) looks up the statement's requests once, gives
credits with window minimums, and plans each statement for the rows at hand. The rollup is
unchanged: same rows, same sums, same `usage_split_requests`, and the lock order of 0006
(rollup rows last, sorted). The trigger itself is unchanged; only its function is replaced.
SQLite's row trigger (0003) does one index seek per row already: it stays.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import legacy_load

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _install(version: int) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # exec_driver_sql: the body's text goes to the server as written (no bind parsing).
    op.get_bind().exec_driver_sql(legacy_load("usage_events_rollup", version))


def upgrade() -> None:
    _install(2)


def downgrade() -> None:
    _install(1)  # 0003's body, as 0006 left it
