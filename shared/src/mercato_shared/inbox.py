"""Idempotent consumption: event ids are recorded in the handlers' own transaction."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData, Table, delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.events import Envelope
from mercato_shared.settings import ServiceSettings
from mercato_shared.sql import Sql
from mercato_shared.tables import inbox_table


@dataclass(frozen=True, slots=True)
class Delivery:
    """One Kafka record's event, and where it was read."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int


@functools.cache
def _insert_many(inbox: Table) -> Sql:
    # One statement for a whole batch, whatever its size: the arrays are parameters, so the
    # statement is prepared once per connection. A multi-row VALUES list would be a new
    # statement (compiled and prepared anew) for every batch size.
    return Sql(
        f'INSERT INTO {inbox.name} (event_id, event_type, order_id, topic, partition, "offset") '  # noqa: S608 - a table name from our own metadata
        "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), "
        "CAST(:orders AS uuid[]), CAST(:topics AS text[]), CAST(:partitions AS integer[]), "
        "CAST(:offsets AS bigint[])) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )


async def record(
    session: AsyncSession, inbox: Table, deliveries: Sequence[Delivery]
) -> set[uuid.UUID]:
    """Mark the events processed; returns the ids that were new (the rest are redeliveries)."""
    if not deliveries:
        return set()
    rows = await _insert_many(inbox).fetch(
        session,
        ids=[d.envelope.id for d in deliveries],
        types=[d.envelope.type for d in deliveries],
        orders=[d.envelope.order_id for d in deliveries],
        topics=[d.topic for d in deliveries],
        partitions=[d.partition for d in deliveries],
        offsets=[d.offset for d in deliveries],
    )
    return {row[0] for row in rows}


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
