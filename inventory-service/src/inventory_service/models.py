"""Tables of the inventory database."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mercato_shared.tables import inbox_table, outbox_table


class Base(DeclarativeBase):
    pass


class Product(Base):
    """A SKU and its stock: on_hand = available + reserved + committed, none negative."""

    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    unit_price: Mapped[int] = mapped_column(Integer)  # minor units (cents)
    currency: Mapped[str] = mapped_column(String(3))
    on_hand: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    committed: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        CheckConstraint("unit_price >= 0", name="product_price"),
        CheckConstraint(
            "reserved >= 0 AND committed >= 0 AND on_hand - reserved - committed >= 0",
            name="product_stock",
        ),
    )

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved - self.committed


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"  # counted in products.reserved
    RELEASED = "RELEASED"  # the order was cancelled; counted nowhere
    COMMITTED = "COMMITTED"  # the order was confirmed; counted in products.committed


class Reservation(Base):
    """One order's hold on one SKU, priced at the catalogue's price when it was made."""

    __tablename__ = "reservations"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(Text, ForeignKey("products.sku"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declarative hook
    __table_args__ = (
        CheckConstraint("quantity > 0", name="reservation_quantity"),
        CheckConstraint("unit_price >= 0", name="reservation_price"),
        CheckConstraint(
            "status IN ('RESERVED', 'RELEASED', 'COMMITTED')", name="reservation_status"
        ),
        # The admin listing: one SKU's reservations, newest first.
        Index("ix_reservations_sku_created_at", "sku", "created_at"),
    )


class OrderState(StrEnum):
    """What inventory knows about an order, whichever of its events arrived first."""

    RESERVED = "RESERVED"  # every line is held
    REJECTED = "REJECTED"  # nothing was held (unknown SKU or short stock)
    CANCELLED = "CANCELLED"  # released, or cancelled before order.created arrived
    CONFIRMED = "CONFIRMED"  # the held stock is committed


class OrderOutcome(Base):
    """One row per order inventory has heard of; its row lock serialises that order's events."""

    __tablename__ = "order_outcomes"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "state IN ('RESERVED', 'REJECTED', 'CANCELLED', 'CONFIRMED')", name="order_state"
        ),
    )


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
