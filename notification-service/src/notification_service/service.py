"""The notification API's use cases; mailing an order's outcome is the saga's (saga.py)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.identity import Identity
from notification_service import repository
from notification_service.schemas import NotificationPage, NotificationRead


async def list_notifications(
    *,
    sessions: async_sessionmaker[AsyncSession],
    identity: Identity,
    customer_id: str | None,
    order_id: uuid.UUID | None = None,
    limit: int,
    offset: int,
) -> NotificationPage:
    """Customers see their own notifications; admins see all, or one customer's by filter."""
    owner = customer_id if identity.is_admin else identity.subject
    async with transaction(sessions) as session:
        rows = await repository.list_notifications(
            session, customer_id=owner, order_id=order_id, limit=limit, offset=offset
        )
        total = await repository.count_notifications(session, customer_id=owner, order_id=order_id)
    return NotificationPage(
        items=[NotificationRead.model_validate(row) for row in rows],
        limit=limit,
        offset=offset,
        total=total,
    )
