"""a link keeps when the remote record (and stock figure) last applied to it was read

``links.read_at``, ``links.stock_read_at``: the reading run's clock just before the call that
answered the record (the stock figure: its own listing's call where stock is listed apart). Two
different jobs of one connection (a pull and a sweep, say) each hold their own lease, so one that
read a product, stalled for minutes and woke after the other stored a newer read of it must not
write its older copy over the newer one: a record read before the stored ``read_at`` is not
applied. Nullable: a link applied before has none, and the next read sets it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import synccli.store.models  # noqa: F401
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for name in ("read_at", "stock_read_at"):
        op.add_column("links", sa.Column(name, synccli.store.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("stock_read_at")
        batch.drop_column("read_at")
