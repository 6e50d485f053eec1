"""llmgw_reserve, llmgw_settle: a request's budget transactions as one call each (PostgreSQL).

Reserve and settle sit on every request's path. As driver statements they were nine per
request, and on a busy event loop each statement costs the gateway more than the database
(psycopg's Python work, a wake-up per round trip). As functions they are one call each, in
one round trip, with the same SQL in the same order: counters locked in the caller's fixed
order (no deadlock across processes), a refusal changes nothing, a hold settles once, a
counter warns once per window. SQLite runs the same steps as driver statements (it has no
functions, and no round trips to save).
The bodies are the files `[legacy/]sql/<name>.v<version>.sql` named below (frozen).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from llmgw.ledger.migrations.sqlfiles import drop, legacy_install

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_reserve", 1), ("llmgw_settle", 1))


def downgrade() -> None:
    drop(op.get_bind(), "llmgw_settle", "llmgw_reserve")
