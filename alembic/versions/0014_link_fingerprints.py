"""a product link keeps the fingerprint of the remote record it was last applied from

``links.fingerprint`` (issue 21): a 64-bit digest of the provider's record as read. A provider
that lists its whole catalogue on every pull (Xero) compares each record with it and applies only
those that differ. Nullable: a link without one (made before, or by another job) is compared in
full, once, and given one.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("links", sa.Column("fingerprint", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("fingerprint")
