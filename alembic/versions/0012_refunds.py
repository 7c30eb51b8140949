"""an order may be a refund of another order

``orders.refund_of`` (the refunded order's number, same connection) and
``order_lines.refund_line`` (the refunded order's line a refund line gives money back on),
issue 22: a refund is posted once its order is, as a credit note or a return sale.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("refund_of", sa.String(100), nullable=True))
    op.add_column("order_lines", sa.Column("refund_line", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_lines") as batch:
        batch.drop_column("refund_line")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("refund_of")
