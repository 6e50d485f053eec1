"""api_keys: per-key limits (rpm, tpm, max_parallel; NULL: the agent type's default from
llmgw.key_limits, else none) and rotation (`rotated_to`: the successor a rotation issued;
`lineage_id`: the first key of a rotation chain, whose counters every successor shares, so an
overlap does not double a runaway agent's rate).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("rpm", "tpm", "max_parallel", "rotated_to", "lineage_id")
_CHECK = "ck_api_keys_limits_positive"


def upgrade() -> None:
    # SQLite cannot add a constraint in place: batch mode copies the table with it.
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_parallel", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rotated_to", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("lineage_id", sa.BigInteger(), nullable=True))
        batch.create_check_constraint(
            _CHECK, "(rpm IS NULL OR rpm > 0) AND (tpm IS NULL OR tpm > 0) "
                    "AND (max_parallel IS NULL OR max_parallel > 0)")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.drop_constraint(_CHECK, type_="check")
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
