"""All SQL of the notification service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.sql import Sql
from notification_service.models import Notification


def _of(customer_id: str | None, order_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if customer_id is not None:
        conditions.append(Notification.customer_id == customer_id)
    if order_id is not None:
        conditions.append(Notification.order_id == order_id)
    return conditions


async def list_notifications(
    session: AsyncSession,
    *,
    customer_id: str | None,
    order_id: uuid.UUID | None = None,
    limit: int,
    offset: int,
) -> Sequence[Notification]:
    query = (
        select(Notification)
        .where(*_of(customer_id, order_id))
        .order_by(Notification.created_at.desc(), Notification.id)
    )
    result = await session.execute(query.limit(limit).offset(offset))
    return result.scalars().all()


async def count_notifications(
    session: AsyncSession, *, customer_id: str | None, order_id: uuid.UUID | None = None
) -> int:
    query = select(func.count()).select_from(Notification).where(*_of(customer_id, order_id))
    return await session.scalar(query) or 0


# The saga's statements run on the driver (mercato_shared.sql): they are its hot path.

# The unique order_id settles races: a concurrent insert for the same order waits on the
# first one's transaction and then does nothing, so each order is mailed by one handler.
_INSERT_IF_ABSENT = Sql(
    "INSERT INTO notifications (id, order_id, customer_id, recipient, kind, subject, body,"
    " message_id) VALUES (CAST(:id AS uuid), CAST(:order_id AS uuid),"
    " CAST(:customer_id AS text), CAST(:recipient AS text), CAST(:kind AS text),"
    " CAST(:subject AS text), CAST(:body AS text), CAST(:message_id AS text))"
    " ON CONFLICT (order_id) DO NOTHING RETURNING id"
)
_MARK_SENT = Sql(
    "UPDATE notifications SET sent_at = CAST(:at AS timestamptz) WHERE id = CAST(:id AS uuid)"
)


async def insert_if_absent(
    session: AsyncSession,
    *,
    order_id: uuid.UUID,
    customer_id: str,
    recipient: str,
    kind: str,
    subject: str,
    body: str,
    message_id: str,
) -> uuid.UUID | None:
    """Insert the order's notification; None when the order already has one."""
    inserted: uuid.UUID | None = await _INSERT_IF_ABSENT.fetchval(
        session,
        id=uuid.uuid4(),
        order_id=order_id,
        customer_id=customer_id,
        recipient=recipient,
        kind=kind,
        subject=subject,
        body=body,
        message_id=message_id,
    )
    return inserted


async def mark_sent(session: AsyncSession, notification_id: uuid.UUID, *, at: datetime) -> None:
    await _MARK_SENT.execute(session, id=notification_id, at=at)
