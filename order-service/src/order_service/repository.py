"""All SQL of the order service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from order_service.models import IdempotencyKey, Order, OrderStatus


async def add(session: AsyncSession, *objects: object) -> None:
    session.add_all(objects)
    await session.flush()


async def get_order(
    session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False
) -> Order | None:
    """One order; ``for_update`` locks its row, which serialises every change to it."""
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order's row, locked, without its lines and history (touching them raises).

    What the saga's handlers need: they change the row and append history, and loading both
    collections would cost two more queries per event.
    """
    result = await session.execute(
        select(Order)
        .where(Order.id == order_id)
        .options(raiseload(Order.lines), raiseload(Order.history))
        .with_for_update()
    )
    return result.scalar_one_or_none()


async def list_orders(
    session: AsyncSession, *, customer_id: str | None, limit: int, offset: int
) -> tuple[Sequence[Order], int]:
    query = select(Order)
    count = select(func.count()).select_from(Order)
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
        count = count.where(Order.customer_id == customer_id)
    result = await session.execute(
        query.order_by(Order.created_at.desc(), Order.id).limit(limit).offset(offset)
    )
    return result.scalars().all(), await session.scalar(count) or 0


async def try_lock_key(session: AsyncSession, customer_id: str, key: str) -> bool:
    """Take a transaction-scoped lock on one customer's Idempotency-Key, without waiting."""
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": f"idempotency:{customer_id}:{key}"},
    )
    return bool(locked)


async def get_key(session: AsyncSession, customer_id: str, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (customer_id, key))


async def purge_keys(session: AsyncSession, *, older_than: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def overdue_orders(session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Order]:
    """Pending orders past their deadline, locked; ones locked elsewhere are skipped."""
    result = await session.execute(
        select(Order)
        .where(Order.status == OrderStatus.PENDING, Order.deadline_at < now)
        .order_by(Order.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.scalars().all()
