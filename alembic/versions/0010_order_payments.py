"""an order may carry the payments the customer made

``order_payments`` (issue 22): amount, date, method and reference of each payment, applied with
the order's invoice as the provider allows (a Lightspeed sale carries them itself).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import synccli.store.models
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(18, 4, asdecimal=True)


def upgrade() -> None:
    op.create_table(
        "order_payments",
        sa.Column("id", ID, primary_key=True),
        sa.Column("order_id", ID, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("payment_no", sa.Integer(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("date", synccli.store.models.UTCDateTime(), nullable=False),
        sa.Column("method", sa.String(50), nullable=False),
        sa.Column("reference", sa.String(255), nullable=True),
        sa.UniqueConstraint("order_id", "payment_no"),
    )


def downgrade() -> None:
    op.drop_table("order_payments")
