"""Tables of the payment database."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mercato_shared.tables import inbox_table, outbox_table


class Base(DeclarativeBase):
    pass


class PaymentStatus(StrEnum):
    """Where an order's payment stands; the last five are final for the authorization."""

    # Only ever seen inside the transaction that calls the processor.
    AUTHORIZING = "AUTHORIZING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"
    # The order was cancelled before payment saw its reservation: it must never authorize.
    CANCELLED = "CANCELLED"


STATUS_VALUES = ", ".join(f"'{status}'" for status in PaymentStatus)


class Payment(Base):
    """An order's payment; amounts in minor units."""

    __tablename__ = "payments"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Integer)
    captured: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    currency: Mapped[str | None] = mapped_column(String(3))
    # The processor's authorization id.
    provider_ref: Mapped[str | None] = mapped_column(Text)
    # The authorization's idempotency key at the processor (auth-<order id>).
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    # Whether that key was voided after giving up on an authorization of unknown outcome.
    key_voided: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "amount >= 0 AND captured >= 0 AND captured <= amount"
            " AND refunded >= 0 AND refunded <= captured",
            name="payment_amounts",
        ),
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="payment_status"),
    )


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
