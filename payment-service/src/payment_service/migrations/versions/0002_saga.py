"""Payments for the saga: captured amounts, the processor's idempotency key, status values.

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

STATUSES = "'AUTHORIZING', 'AUTHORIZED', 'CAPTURED', 'VOIDED', 'REFUNDED', 'FAILED', 'CANCELLED'"


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("captured", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("payments", sa.Column("idempotency_key", sa.Text(), nullable=True))
    op.add_column(
        "payments",
        sa.Column("key_voided", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # A cancellation that arrives before the reservation leaves a row with no amount to charge.
    op.alter_column("payments", "currency", existing_type=sa.String(3), nullable=True)
    op.execute("UPDATE payments SET captured = amount WHERE status IN ('CAPTURED', 'REFUNDED')")
    op.drop_constraint("payment_amounts", "payments", type_="check")
    op.create_check_constraint(
        "payment_amounts",
        "payments",
        "amount >= 0 AND captured >= 0 AND captured <= amount AND refunded >= 0 AND refunded <= captured",
    )
    op.create_check_constraint("payment_status", "payments", f"status IN ({STATUSES})")


def downgrade() -> None:
    op.drop_constraint("payment_status", "payments", type_="check")
    op.drop_constraint("payment_amounts", "payments", type_="check")
    op.create_check_constraint(
        "payment_amounts", "payments", "amount >= 0 AND refunded >= 0 AND refunded <= amount"
    )
    # ISO 4217's code for "no currency" stands in where a cancellation left none.
    op.execute("UPDATE payments SET currency = 'XXX' WHERE currency IS NULL")
    op.alter_column("payments", "currency", existing_type=sa.String(3), nullable=False)
    op.drop_column("payments", "key_voided")
    op.drop_column("payments", "idempotency_key")
    op.drop_column("payments", "captured")
