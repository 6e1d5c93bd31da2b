"""Idempotent consumption: an event id is recorded in the handler's own transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData, Table, delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.events import Envelope
from mercato_shared.settings import ServiceSettings
from mercato_shared.tables import inbox_table


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


async def purge(*, sessions: async_sessionmaker[AsyncSession], settings: ServiceSettings) -> int:
    """Forget processed event ids older than the retention window; returns how many.

    A redelivery older than the window would be processed again, so the window must exceed
    the longest time an event can wait in Kafka (retention) or a dead-letter topic.
    """
    table = inbox_table(MetaData())
    cutoff = datetime.now(UTC) - timedelta(hours=settings.inbox_retention_hours)
    async with transaction(sessions) as session:
        result = await session.execute(delete(table).where(table.c.processed_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
