"""Reservations per order and SKU, and what inventory knows about each order.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.Uuid(), primary_key=True),
        sa.Column("sku", sa.Text(), sa.ForeignKey("products.sku"), primary_key=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("quantity > 0", name="reservation_quantity"),
        sa.CheckConstraint("unit_price >= 0", name="reservation_price"),
        sa.CheckConstraint(
            "status IN ('RESERVED', 'RELEASED', 'COMMITTED')", name="reservation_status"
        ),
    )
    op.create_index("ix_reservations_sku_created_at", "reservations", ["sku", "created_at"])
    op.create_table(
        "order_outcomes",
        sa.Column("order_id", sa.Uuid(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "state IN ('RESERVED', 'REJECTED', 'CANCELLED', 'CONFIRMED')", name="order_state"
        ),
    )


def downgrade() -> None:
    op.drop_table("order_outcomes")
    op.drop_index("ix_reservations_sku_created_at", table_name="reservations")
    op.drop_table("reservations")
