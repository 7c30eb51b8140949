"""each payment applied to a posted invoice keeps its own state

``order_payments`` gains ``state`` (pending, posting, posted, refused), ``remote_id``, ``error``
and ``posted_at``: a payment applied after its invoice (Xero's PUT /Payments) is claimed
(``posting``) before the call and looked up before it is sent again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import synccli.store.models
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_payments") as batch:
        batch.add_column(sa.Column("state", sa.String(20), nullable=True))
        batch.add_column(sa.Column("remote_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("posted_at", synccli.store.models.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("order_payments") as batch:
        batch.drop_column("posted_at")
        batch.drop_column("error")
        batch.drop_column("remote_id")
        batch.drop_column("state")
