"""Tables of the order database."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mercato_shared.tables import inbox_table, outbox_table


class Base(DeclarativeBase):
    pass


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    email: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[int | None] = mapped_column(Integer)  # minor units, known once reserved
    currency: Mapped[str | None] = mapped_column(String(3))
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lines: Mapped[list[OrderLine]] = relationship(
        order_by="OrderLine.line_no", lazy="selectin", cascade="all, delete-orphan"
    )
    history: Mapped[list[OrderHistory]] = relationship(
        order_by="OrderHistory.id", lazy="selectin", cascade="all, delete-orphan"
    )

    # Load server-side timestamps with the INSERT, so responses need no second query.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declarative hook
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'CONFIRMED', 'CANCELLED')", name="order_status"),
        # The deadline sweeper scans pending orders by deadline.
        Index(
            "ix_orders_pending_deadline",
            "deadline_at",
            postgresql_where=text("status = 'PENDING'"),
        ),
    )

    @property
    def terminal(self) -> bool:
        return self.status != OrderStatus.PENDING


class OrderLine(Base):
    __tablename__ = "order_lines"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("quantity > 0", name="order_line_quantity"),)


class OrderHistory(Base):
    """What happened to an order, in order: created, reserved, confirmed, cancelled."""

    __tablename__ = "order_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012


class IdempotencyKey(Base):
    """An Idempotency-Key a customer used, the request it came with and the order it made."""

    __tablename__ = "idempotency_keys"

    customer_id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
