"""Tables of the payment database."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mercato_shared.tables import inbox_table, outbox_table


class Base(DeclarativeBase):
    pass


class Payment(Base):
    """An order's payment; amounts in minor units."""

    __tablename__ = "payments"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Integer)
    refunded: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    provider_ref: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "amount >= 0 AND refunded >= 0 AND refunded <= amount", name="payment_amounts"
        ),
    )


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
