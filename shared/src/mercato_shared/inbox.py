"""Idempotent consumption: an event id is recorded in the handler's own transaction."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.events import Envelope


async def record(
    session: AsyncSession,
    inbox: Table,
    envelope: Envelope,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> bool:
    """Mark the event processed; False if it already was (a redelivery to skip)."""
    result = await session.execute(
        insert(inbox)
        .values(
            event_id=envelope.id,
            event_type=envelope.type,
            order_id=envelope.order_id,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        .on_conflict_do_nothing(index_elements=[inbox.c.event_id])
        .returning(inbox.c.event_id)
    )
    return result.first() is not None
