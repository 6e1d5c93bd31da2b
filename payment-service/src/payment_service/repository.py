"""All SQL of the payment service."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from payment_service.models import Payment


async def get_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    return await session.get(Payment, order_id)
