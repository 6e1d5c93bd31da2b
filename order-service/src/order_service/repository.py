"""All SQL of the order service."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from order_service.models import Order


async def add_order(session: AsyncSession, order: Order) -> None:
    session.add(order)
    await session.flush()


async def get_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    result = await session.execute(select(Order).where(Order.id == order_id))
    return result.scalar_one_or_none()
