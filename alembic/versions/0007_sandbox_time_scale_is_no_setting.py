"""a simulator's time scale is kept apart from a connection's settings

``connections set`` writes settings, including on a merchant's real account; the speed-up a
simulator runs at must not be one of them (issue 19). The sandbox harness alone writes this
table. A ``time_scale`` left in old settings is no longer read.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sandbox_clocks",
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("time_scale", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sandbox_clocks")
