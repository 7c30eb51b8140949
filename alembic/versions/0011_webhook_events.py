"""webhook deliveries, stored once each, and per-day delivery and rejection counts

``webhook_events`` (#23): one row per change a provider pushed, unique per connection and
dedup key so a provider's retry is stored once; ``webhook_days``: deliveries accepted and
requests refused for their signature, per connection and UTC day.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import synccli.store.models
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stream", sa.String(30), nullable=False),
        sa.Column("entity_id", sa.String(100), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("occurred_at", synccli.store.models.UTCDateTime(), nullable=False),
        sa.Column("received_at", synccli.store.models.UTCDateTime(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("applied_at", synccli.store.models.UTCDateTime(), nullable=True),
        sa.UniqueConstraint("connection_id", "dedup_key", name="uq_webhook_events_dedup"),
    )
    op.create_index(
        "ix_webhook_events_open", "webhook_events", ["connection_id", "stream", "state"]
    )
    op.create_table(
        "webhook_days",
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("last_delivery_at", synccli.store.models.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_days")
    op.drop_index("ix_webhook_events_open", table_name="webhook_events")
    op.drop_table("webhook_events")
