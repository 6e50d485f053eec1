"""llmgw_reserve_many: many requests' reservations in one call (PostgreSQL).

Under load a gateway has dozens of requests reserving at once. Each call cost the gateway's
event loop a statement (psycopg's Python work, a wake-up) and the server a commit, which
cost more than the work. This runs the reserves queued during one pass of the loop as one
statement, one transaction: each request exactly as `llmgw_reserve` (0004) runs it alone, a
refusal changing nothing of its own. Every counter of the batch is locked first, in one
global order (the order a lone call uses: byte order of the key, then the window's start),
so batches and lone calls never wait for each other in a cycle. (Settles: 0006.)
The bodies are the files `[legacy/]sql/<name>.v<version>.sql` named below (frozen).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import drop, legacy_install

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_lock_batch_counters", 1), ("llmgw_reserve_many", 1))


def downgrade() -> None:
    drop(op.get_bind(), "llmgw_reserve_many", "llmgw_lock_batch_counters")
