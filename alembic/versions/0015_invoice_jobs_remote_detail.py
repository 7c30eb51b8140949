"""an invoice job keeps what the provider's answer held that a refund of its order needs

``invoice_jobs.remote_detail`` (issue 22): at Lightspeed R-Series the sale's SaleLines, echoed by
the ``POST Sale.json`` answer, name the lines a refund gives back; kept here, the refund is its
POST alone instead of a GET of the sale and the POST. Nullable: a job posted before (or found by
a look-up) has none, and its refund reads the sale as before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 01:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("invoice_jobs", sa.Column("remote_detail", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice_jobs") as batch:
        batch.drop_column("remote_detail")
