"""Sessions, end users, requested models, dialects and every token kind in the ledger.

`usage_events` gains:
- `session_id` (the agent run: `X-LLMGW-Session`, Claude Code's session), `end_user` (who the
  caller acts for: `user` / `metadata.user_id`), `requested_model` (the alias or group name
  the client sent), `dialect` (chat, anthropic, responses): NULL on older rows;
- `cache_write_tokens`, `cache_write_1h_tokens` (the 1-hour part), `reasoning_tokens`:
  integers, 0 on older rows;
- `ix_usage_events_session` (session_id, project_id, ts): reports by session read
  usage_events in their window, as the rollup keeps no sessions.
The rollup triggers (0003 SQLite, 0007 PostgreSQL) name their columns and are unchanged.
PostgreSQL's settle, which writes a batch's rows, names its columns too: `llmgw_settle_many`
version 3 (migrations/legacy/sql/llmgw_settle_many.v3.sql) writes the new ones.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from llmgw.ledger.migrations.sqlfiles import legacy_install

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = (("session_id", 200), ("end_user", 200), ("requested_model", 200), ("dialect", 16))
_TOKENS = ("cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")
_INDEX = "ix_usage_events_session"


def upgrade() -> None:
    # ADD COLUMN on both databases: SQLite's batch mode would rebuild the table and lose
    # the rollup triggers; a constant default fills the old rows without rewriting them.
    for name, length in _TEXT:
        op.add_column("usage_events", sa.Column(name, sa.String(length), nullable=True))
    for name in _TOKENS:
        op.add_column("usage_events", sa.Column(name, sa.Integer(), nullable=False,
                                                server_default=sa.text("0")))
    op.create_index(_INDEX, "usage_events", ["session_id", "project_id", "ts"])
    legacy_install(op.get_bind(), ("llmgw_settle_many", 3))


def downgrade() -> None:
    legacy_install(op.get_bind(), ("llmgw_settle_many", 2))
    op.drop_index(_INDEX, table_name="usage_events")
    bind = op.get_bind()
    for name in (*reversed(_TOKENS), *(n for n, _ in reversed(_TEXT))):
        if bind.dialect.name == "sqlite":  # SQLite >= 3.35 drops a column in place
            bind.exec_driver_sql(f"ALTER TABLE usage_events DROP COLUMN {name}")
        else:
            op.drop_column("usage_events", name)
