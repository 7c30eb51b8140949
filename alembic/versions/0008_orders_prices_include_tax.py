"""an order may say its prices include tax

``orders.prices_include_tax`` (issue 22): nullable, so a shop's own INSERTs written before it
keep working; NULL reads as false (prices exclusive of tax, the rule until now).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("prices_include_tax", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("prices_include_tax")
