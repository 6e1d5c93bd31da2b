"""Helpers for inventory tests: event builders and a handle on one inventory database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inventory_service import repository, service
from inventory_service.handlers import build_batch_lock, build_handlers
from inventory_service.models import Base, OrderState, Product, Reservation, outbox
from inventory_service.settings import InventorySettings
from mercato_ops.check import inventory_violations
from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.events import (
    CancelReason,
    Envelope,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderLine,
)


def created(*lines: tuple[str, int], order_id: uuid.UUID | None = None, customer="alice"):
    """An order.created envelope with the given (sku, quantity) lines."""
    payload = OrderCreated(
        customer_id=customer, lines=[OrderLine(sku=sku, quantity=q) for sku, q in lines]
    )
    return Envelope.wrap(payload, order_id=order_id or uuid.uuid4())


def cancelled(order_id: uuid.UUID, reason=CancelReason.CUSTOMER_CANCELLED) -> Envelope:
    return Envelope.wrap(OrderCancelled(customer_id="alice", reason=reason), order_id=order_id)


def confirmed(order_id: uuid.UUID, amount: int = 0) -> Envelope:
    payload = OrderConfirmed(customer_id="alice", amount=amount, currency="EUR")
    return Envelope.wrap(payload, order_id=order_id)


def product(sku: str, on_hand: int, unit_price: int = 1000, currency: str = "EUR") -> Product:
    return Product(
        sku=sku, name=sku.title(), unit_price=unit_price, currency=currency, on_hand=on_hand
    )


class Inventory:
    """One migrated inventory database, driven the way the worker and the API drive it."""

    def __init__(self, settings: InventorySettings, sessions: async_sessionmaker[AsyncSession]):
        self.settings = settings
        self.sessions = sessions
        self.handlers = build_handlers(settings)
        self.lock_batch = build_batch_lock(settings)

    async def seed(self, products: list[Product]) -> None:
        await service.seed_catalogue(sessions=self.sessions, products=products)

    async def handle(self, envelope: Envelope) -> None:
        """Run the event's handler in its own transaction, as the consumer does."""
        await self.handle_batch([envelope])

    async def handle_batch(self, envelopes: list[Envelope], *, before_steps: Any = None) -> None:
        """A batch as the worker applies it: stock locked, then each step, one transaction.

        ``before_steps`` is awaited between the two, to line concurrent batches up.
        """
        async with transaction(self.sessions) as session:
            await self.lock_batch(session, envelopes)
            if before_steps is not None:
                await before_steps()
            for envelope in envelopes:
                await self.handlers[envelope.type](session, envelope)

    async def stock(self, sku: str) -> tuple[int, int, int]:
        """(on_hand, reserved, committed) of a SKU."""
        async with transaction(self.sessions) as session:
            found = await repository.get_product(session, sku)
        assert found is not None, sku
        return found.on_hand, found.reserved, found.committed

    async def reservations(self, order_id: uuid.UUID | None = None) -> list[Reservation]:
        query = select(Reservation).order_by(Reservation.order_id, Reservation.sku)
        if order_id is not None:
            query = query.where(Reservation.order_id == order_id)
        async with transaction(self.sessions) as session:
            return list((await session.scalars(query)).all())

    async def state(self, order_id: uuid.UUID) -> OrderState | None:
        async with transaction(self.sessions) as session:
            return await repository.lock_order(session, order_id)

    async def outbox(self) -> list[Any]:
        """The outbox rows in publish order."""
        async with transaction(self.sessions) as session:
            return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(type, payload) of every outbox event in publish order."""
        return [(row.event_type, row.envelope["payload"]) for row in await self.outbox()]

    async def violations(self) -> list[str]:
        """What `mercato check` finds wrong with this inventory database on its own."""
        return await inventory_violations(self.settings.database_url.get_secret_value())

    async def tamper(self, model: type[Base], key: Any, **changes: Any) -> None:
        """Change a row behind the saga's back (to prove the invariant check notices)."""
        async with transaction(self.sessions) as session:
            row = await session.get(model, key)
            assert row is not None
            for name, value in changes.items():
                setattr(row, name, value)


@contextlib.asynccontextmanager
async def opened(settings: InventorySettings) -> AsyncIterator[Inventory]:
    """An Inventory on the settings' database, its engine disposed of afterwards."""
    engine = create_engine(settings)
    try:
        yield Inventory(settings, create_sessionmaker(engine))
    finally:
        await engine.dispose()
