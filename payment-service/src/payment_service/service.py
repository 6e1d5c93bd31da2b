"""Business rules of payments."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.identity import Identity
from payment_service import repository
from payment_service.models import Payment


async def get_payment(
    *, sessions: async_sessionmaker[AsyncSession], identity: Identity, order_id: uuid.UUID
) -> Payment:
    """An order's payment if the caller may see it (404 otherwise, as for a missing one)."""
    async with transaction(sessions) as session:
        payment = await repository.get_payment(session, order_id)
    return identity.readable(payment, missing=f"no payment for order {order_id}")
