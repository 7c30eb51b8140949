"""attempt messages kept one by one

A refusal's messages (Xero's ``Elements[].ValidationErrors[].Message``) are kept as a JSON list
on the attempt row, each whole (issue 16, line 3); ``error`` keeps them joined, for reading.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_attempts") as batch:
        batch.add_column(sa.Column("messages", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice_attempts") as batch:
        batch.drop_column("messages")
