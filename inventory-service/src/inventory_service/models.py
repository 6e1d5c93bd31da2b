"""Tables of the inventory database."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Integer, String, Text
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


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
