"""Inventory's handlers behind the real consumer: Kafka in, inbox and outbox in Postgres."""

import asyncio

import pytest
from sqlalchemy import func, select

from inventory_service.handlers import build_handlers
from inventory_service.models import inbox
from inventory_service.settings import InventorySettings
from mercato_shared.consumer import EventConsumer
from mercato_shared.db import transaction
from mercato_shared.kafka import create_producer
from tests.infra import KAFKA, eventually
from tests.inventory_service.support import cancelled, created


@pytest.fixture
async def kafka_inventory(seeded, inventory_db, kafka_prefix):
    """The seeded inventory, with settings pointing at this test's own topics."""
    seeded.settings = InventorySettings(
        database_url=inventory_db,
        kafka_bootstrap_servers=KAFKA,
        kafka_prefix=kafka_prefix,
        consumer_retry_backoff_seconds=0.01,
    )
    seeded.handlers = build_handlers(seeded.settings)
    producer = create_producer(seeded.settings)
    await producer.start()
    try:
        yield seeded, producer
    finally:
        await producer.stop()


async def _consume(inventory, producer, done) -> EventConsumer:
    """Run the consumer with inventory's handlers until ``done(consumer)`` holds."""

    async def dead_letters():
        return producer

    consumer = EventConsumer(
        settings=inventory.settings,
        topics=[inventory.settings.topic("orders")],
        handlers=inventory.handlers,
        sessions=inventory.sessions,
        inbox_table=inbox,
        dead_letters=dead_letters,
    )
    task = asyncio.create_task(consumer.run())

    async def finished():
        return done(consumer)

    try:
        await eventually(finished, within=60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return consumer


async def test_a_redelivered_order_created_reserves_once(kafka_inventory):
    inventory, producer = kafka_inventory
    event = created(("POSTER-LTD", 2))
    topic = inventory.settings.topic("orders")
    for _ in range(2):
        await producer.send_and_wait(
            topic, value=event.model_dump_json().encode(), key=str(event.order_id).encode()
        )

    consumer = await _consume(inventory, producer, lambda c: c.processed == 2)

    assert consumer.dead_lettered == 0
    assert len(await inventory.reservations(event.order_id)) == 1
    assert await inventory.stock("POSTER-LTD") == (3, 2, 0)
    rows = await inventory.outbox()
    assert [(row.event_type, row.topic) for row in rows] == [
        ("inventory.reserved", inventory.settings.topic("inventory"))
    ]
    async with transaction(inventory.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(inbox)) == 1
    assert await inventory.violations() == []


async def test_cancellation_consumed_first_prevents_the_reservation(kafka_inventory):
    inventory, producer = kafka_inventory
    event = created(("POSTER-LTD", 3))
    topic = inventory.settings.topic("orders")
    for envelope in (cancelled(event.order_id), event):
        await producer.send_and_wait(
            topic, value=envelope.model_dump_json().encode(), key=str(event.order_id).encode()
        )

    await _consume(inventory, producer, lambda c: c.processed == 2)

    assert await inventory.reservations() == []
    assert await inventory.outbox() == []
    assert await inventory.stock("POSTER-LTD") == (3, 0, 0)
