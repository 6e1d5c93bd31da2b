"""Transactional outbox: events are rows written with the state change, then relayed to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mercato_shared.events import Envelope, Payload
from mercato_shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST, OUTBOX_PUBLISHED
from mercato_shared.sql import Sql
from mercato_shared.tables import OUTBOX_CHANNEL
from mercato_shared.tracing import context_from, current_context_headers, tracer
from mercato_shared.tracing import enabled as tracing_enabled

log = logging.getLogger(__name__)

# The header every record names its event type in: consumers skip types they do not handle
# by it, before parsing the record.
EVENT_TYPE_HEADER = "event_type"

# One relay publishes at a time per database: a second one waits, which keeps per-order
# order without coordination (two relays splitting a batch could reorder an order's events).
RELAY_LOCK_KEY = 0x6D657263  # "merc"
LEAD_SQL = "SELECT pg_try_advisory_lock($1)"


async def add_event(
    session: AsyncSession, payload: Payload, *, order_id: uuid.UUID, topic: str
) -> Envelope:
    """Write an event to the outbox inside the caller's transaction."""
    envelope, row = outbox_row(payload, order_id=order_id, topic=topic)
    await _ADD_EVENT.execute(session, **row)
    return envelope


# An outbox row as part of a larger statement (a data-modifying CTE, or the statement's last
# part): its values are the bound parameters named as outbox_row() names them. Every
# service's outbox table is named so (tables.outbox_table).
def outbox_insert(envelope: str = "CAST(:envelope AS jsonb)") -> str:
    """The INSERT of an outbox row; ``envelope`` is the SQL of its envelope's value.

    A statement may derive the envelope from the bound one, as with rows it writes itself.
    """
    return (
        "INSERT INTO outbox (event_id, topic, key, event_type, envelope, headers)"
        " SELECT CAST(:event_id AS uuid), CAST(:topic AS text), CAST(:key AS text),"
        f" CAST(:event_type AS text), {envelope}, CAST(:headers AS jsonb)"
    )


OUTBOX_INSERT = outbox_insert()
_ADD_EVENT = Sql(OUTBOX_INSERT)


def outbox_row(
    payload: Payload, *, order_id: uuid.UUID, topic: str
) -> tuple[Envelope, dict[str, Any]]:
    """An event and its outbox row's values, for a statement that writes it with other rows.

    The JSON columns' values are JSON text: pydantic serialises the envelope once, and the
    relay sends the stored text as the record's value.
    """
    envelope = Envelope.wrap(payload, order_id=order_id)
    return envelope, {
        "event_id": envelope.id,
        "topic": topic,
        "key": str(envelope.order_id),
        "event_type": envelope.type,
        "envelope": envelope.model_dump_json(),
        # The relay publishes later, in no request's context: the row carries the trace.
        "headers": json.dumps(current_context_headers()),
    }


class OutboxRelay:
    """Moves outbox rows to Kafka in id order and deletes them once the broker has them.

    The relay works on one connection of its own, outside the pool. On it, it LISTENs for new
    rows and holds a session advisory lock while it leads: one relay per database publishes, the
    others wait for the lock. A batch then costs two round trips, the read and the delete, with
    no transaction around them. A crash between the send and the delete leaves the rows, and
    they are sent again (delivery is at least once; consumers dedupe by event id). The relay
    that takes the lock over sends them again too. A lost connection gives the lock up with it.
    """

    def __init__(
        self,
        *,
        service: str = "service",
        engine: AsyncEngine,
        outbox: Table,
        producer_factory: Callable[[], AIOKafkaProducer],
        batch_size: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self._service = service
        self._engine = engine
        self._outbox = outbox
        self._producer_factory = producer_factory
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._conn: asyncpg.Connection | None = None
        self._leading = False
        self._measured_at = -math.inf
        self._published = OUTBOX_PUBLISHED.labels(service)
        self._traced = tracing_enabled()
        # Rendered once, in the engine's dialect, for the relay's own asyncpg connection. As
        # text: the record's value is the stored JSON, not decoded and encoded again.
        read = (
            select(
                outbox.c.id,
                outbox.c.topic,
                outbox.c.key,
                outbox.c.event_type,
                cast(outbox.c.envelope, Text).label("envelope"),
                cast(outbox.c.headers, Text).label("headers"),
            )
            .order_by(outbox.c.id)
            .limit(bindparam("limit", type_=Integer))
        )
        ids = bindparam("ids", type_=ARRAY(BigInteger))
        remove = delete(outbox).where(outbox.c.id == any_(ids))
        self._read = str(read.compile(dialect=engine.dialect))
        self._delete = str(remove.compile(dialect=engine.dialect))
        self.published = 0

    async def run(self) -> None:
        """Relay until cancelled; survives broker and database outages by retrying."""
        try:
            while True:
                # Cleared before reading the table, not after: a NOTIFY for a row committed
                # while this round runs must start another round at once. Cleared after, it
                # would be lost, and that row would wait for the next poll.
                self._wake.clear()
                try:
                    while await self.relay_once() == self._batch_size:
                        pass
                except (KafkaError, OSError, DBAPIError, asyncpg.PostgresError) as exc:
                    log.warning("outbox relay failed, will retry: %s", exc)
                    await self._reset()
                except asyncpg.InterfaceError as exc:
                    log.warning("outbox relay lost its connection, will retry: %s", exc)
                    await self._reset()
                except Exception:
                    log.exception("outbox relay failed unexpectedly, will retry")
                    await self._reset()
                # A gauge, not a count per event: at most once per poll interval, so that a
                # busy relay does not add a table scan to every round.
                if time.monotonic() - self._measured_at >= self._poll_interval:
                    with contextlib.suppress(Exception):
                        await self._measure_backlog()
                await self._idle()
        finally:
            await self.close()

    async def close(self) -> None:
        """Release the producer, the lock and the connection."""
        await self._reset()

    async def relay_once(self) -> int:
        """Publish one batch; returns the rows sent (0 when another relay leads)."""
        conn = await self._lead()
        if conn is None:
            return 0
        rows = await conn.fetch(self._read, self._batch_size)
        if not rows:
            return 0
        producer = await self._get_producer()
        # Send the whole batch before awaiting: the idempotent producer keeps per-partition
        # order, and the rows are deleted only when every send is acknowledged.
        pending = [await self._send(producer, row) for row in rows]
        await asyncio.gather(*pending)
        await conn.execute(self._delete, [row["id"] for row in rows])
        self.published += len(rows)
        self._published.inc(len(rows))
        return len(rows)

    async def _lead(self) -> asyncpg.Connection | None:
        """The relay's connection while this relay holds the lock, else None."""
        conn = self._conn
        if conn is None or conn.is_closed():
            await self._reset_connection()
            url = self._engine.url.set(drivername="postgresql")
            conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
            try:
                await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        if not self._leading:
            self._leading = bool(await conn.fetchval(LEAD_SQL, RELAY_LOCK_KEY))
        return conn if self._leading else None

    async def _idle(self) -> None:
        """Until the next round: a NOTIFY wakes the leader; the others only poll for the lock."""
        if self._leading:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        else:
            await asyncio.sleep(self._poll_interval)

    async def _measure_backlog(self) -> None:
        outbox = self._outbox
        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(
                        func.count(),
                        func.extract("epoch", func.now() - func.min(outbox.c.created_at)),
                    ).select_from(outbox)
                )
            ).one()
        self._measured_at = time.monotonic()
        OUTBOX_BACKLOG.labels(self._service).set(count)
        OUTBOX_OLDEST.labels(self._service).set(float(oldest or 0))

    async def _send(self, producer: AIOKafkaProducer, row: asyncpg.Record) -> asyncio.Future[Any]:
        event_type: str = row["event_type"]
        stored: dict[str, str] = {} if row["headers"] == "{}" else json.loads(row["headers"])
        if not self._traced:
            # No exporter, no publish span: the record carries the row's stored context.
            return await self._publish(producer, row, stored)
        with tracer.start_as_current_span(
            f"{row['topic']} publish",
            context=context_from(stored),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": row["topic"],
                "mercato.event_type": event_type,
                "mercato.order_id": row["key"],
            },
        ):
            return await self._publish(producer, row, current_context_headers())

    async def _publish(
        self, producer: AIOKafkaProducer, row: asyncpg.Record, context: dict[str, str]
    ) -> asyncio.Future[Any]:
        headers = [(EVENT_TYPE_HEADER, row["event_type"].encode())]
        headers += [(k, v.encode()) for k, v in context.items()]
        future: asyncio.Future[Any] = await producer.send(
            row["topic"], value=row["envelope"].encode(), key=row["key"].encode(), headers=headers
        )
        return future

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._producer_factory()
            await producer.start()
            self._producer = producer
        return self._producer

    async def _reset(self) -> None:
        await self._reset_producer()
        await self._reset_connection()

    async def _reset_producer(self) -> None:
        # A fresh producer gets a new producer id, which clears a sequence-number state that
        # an idempotent producer can get stuck in after a broker blip.
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _reset_connection(self) -> None:
        # Closing the connection releases the lock: after a failure another relay may lead.
        self._leading = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
