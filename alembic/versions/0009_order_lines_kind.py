"""an order line may be a line without a product code

``order_lines.kind`` (issue 22): NULL or ``product`` is a product line, matched by its ``sku``;
``shipping``, ``surcharge``, ``discount``, ``gift_card`` or ``other`` is a line without a product
code (its ``sku`` empty), posted as the provider allows and never made into a product. Nullable,
so a shop's own INSERTs written before it keep working.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("order_lines", sa.Column("kind", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_lines") as batch:
        batch.drop_column("kind")
