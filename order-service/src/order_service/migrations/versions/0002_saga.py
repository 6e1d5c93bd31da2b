"""The saga: amounts, deadlines, status history and idempotency keys.

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
    op.add_column("orders", sa.Column("email", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("amount", sa.Integer(), nullable=True))
    op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
    op.add_column(
        "orders",
        sa.Column(
            "deadline_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.alter_column("orders", "deadline_at", server_default=None)
    # The deadline sweeper scans pending orders by deadline.
    op.create_index(
        "ix_orders_pending_deadline",
        "orders",
        ["deadline_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_table(
        "order_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "order_id", sa.Uuid(), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_order_history_order_id", "order_history", ["order_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("customer_id", sa.Text(), primary_key=True),
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column(
            "order_id", sa.Uuid(), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("order_history")
    op.drop_index("ix_orders_pending_deadline", table_name="orders")
    for column in ("deadline_at", "currency", "amount", "email"):
        op.drop_column("orders", column)
