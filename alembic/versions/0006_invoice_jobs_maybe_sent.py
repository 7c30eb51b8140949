"""invoice jobs remember that an earlier post may have been sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_jobs") as batch_op:
        batch_op.add_column(
            sa.Column("maybe_sent", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Until now the ``posting`` state alone said so.
    op.execute("UPDATE invoice_jobs SET maybe_sent = true WHERE state = 'posting'")


def downgrade() -> None:
    with op.batch_alter_table("invoice_jobs") as batch_op:
        batch_op.drop_column("maybe_sent")
