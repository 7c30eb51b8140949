"""shop rows outlive their connection

Removing a connection must never delete the shop's own products, customers and orders (issue
17): their ``connection_id`` becomes nullable and its foreign key ON DELETE SET NULL instead of
CASCADE. Order lines hang off orders, so they stay too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHOP_TABLES = ("products", "customers", "orders")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite's foreign keys from 0001 have no name: batch mode names them by this convention when it
# reflects the table, so the one on connection_id can be dropped and made again.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _repoint(ondelete: str, nullable: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in SHOP_TABLES:
        # PostgreSQL named the unnamed constraint <table>_<column>_fkey
        name = f"fk_{table}_connection_id_connections" if sqlite else f"{table}_connection_id_fkey"
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.alter_column("connection_id", existing_type=ID, nullable=nullable)
            batch.drop_constraint(name, type_="foreignkey")
            batch.create_foreign_key(
                name, "connections", ["connection_id"], ["id"], ondelete=ondelete
            )


def upgrade() -> None:
    _repoint("SET NULL", nullable=True)


def downgrade() -> None:
    # Rows of removed connections (connection_id NULL) must be dealt with first: NOT NULL refuses
    # them rather than this step deleting the shop's data.
    _repoint("CASCADE", nullable=False)
