"""All SQL of the notification service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from notification_service.models import Notification


async def list_notifications(
    session: AsyncSession, *, customer_id: str | None, limit: int, offset: int
) -> Sequence[Notification]:
    query = select(Notification).order_by(Notification.created_at.desc(), Notification.id)
    if customer_id is not None:
        query = query.where(Notification.customer_id == customer_id)
    result = await session.execute(query.limit(limit).offset(offset))
    return result.scalars().all()
