"""llmgw_settle_many: many requests' settles in one call; one lock order for every writer.

A settle locks three kinds of rows: its reservation, its counters, and (through the usage
rows' rollup trigger, 0003) rollup rows. `llmgw_settle` (0004) wrote the usage rows first,
so it locked rollup rows before counters, the opposite of a batch that locks every counter
of the batch first: the two deadlocked (1 in 200 concurrent requests). Now every writer
takes them in one order, reservations, then counters (in the global order of 0005), then
rollup rows (the trigger's upsert is sorted), as SQLite's steps and `reconcile` already
did:
- `llmgw_settle` is redefined to write its usage rows last (same arguments and results);
- `llmgw_settle_many` closes the batch's reservations in batch order, locks the counters
  of the batch, moves each still-open hold to spend as `llmgw_settle` would, then inserts
  every usage row of the batch in one statement (one trigger run for the batch);
- `llmgw_reserve_many` makes the batch's missing counters as it locks them, one at a time
  in the global order (`llmgw_make_batch_counters`), as a lone reserve does with its own.
  It made them request by request: at a window's start, two batches (or a batch and a lone
  reserve) could each make a counter the other then waited for.
The bodies are the files `[legacy/]sql/<name>.v<version>.sql` named below (frozen).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import drop, legacy_install

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_settle", 2), ("llmgw_settle_many", 1),
            ("llmgw_make_batch_counters", 1), ("llmgw_reserve_many", 2))


def downgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_reserve_many", 1))
    drop(op.get_bind(), "llmgw_make_batch_counters", "llmgw_settle_many")
    legacy_install(op.get_bind(), ("llmgw_settle", 1))
