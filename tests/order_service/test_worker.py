"""The order worker over real Kafka: the shared consumer with these handlers, and the process
(outbox relay, consumer and deadline sweep together)."""

import asyncio
import signal

from sqlalchemy import func, select

from mercato_shared.consumer import EventConsumer
from mercato_shared.events import Envelope, PaymentAuthorized
from mercato_shared.kafka import create_producer
from order_service.handlers import build_handlers
from order_service.models import inbox
from tests.e2e.processes import Process
from tests.infra import KAFKA, eventually, free_port
from tests.kafka_tools import read_topic
from tests.order_service.support import AUTHORIZED, RESERVED, place, state


async def _publish(producer, settings, order_id, payload):
    envelope = Envelope.wrap(payload, order_id=order_id)
    await producer.send_and_wait(
        settings.topic(payload.topic),
        value=envelope.model_dump_json().encode(),
        key=str(order_id).encode(),
    )
    return envelope


async def test_the_consumer_confirms_once_however_often_a_reply_arrives(
    settings, sessions, kafka_prefix
):
    settings = settings.model_copy(
        update={"kafka_prefix": kafka_prefix, "kafka_bootstrap_servers": KAFKA}
    )
    order_id = await place(settings, sessions)
    producer = create_producer(settings)
    await producer.start()

    async def dead_letters():
        return producer

    consumer = EventConsumer(
        settings=settings,
        topics=[settings.topic("inventory"), settings.topic("payments")],
        handlers=build_handlers(settings),
        sessions=sessions,
        inbox_table=inbox,
        dead_letters=dead_letters,
    )
    task = asyncio.create_task(consumer.run())
    try:
        # Replies on different topics may arrive in either order; this test wants both steps.
        await _publish(producer, settings, order_id, RESERVED)

        async def reserved():
            return consumer.processed == 1

        await eventually(reserved)
        authorized = await _publish(producer, settings, order_id, AUTHORIZED)
        # Redelivered, as after a rebalance: the same event id once more.
        await producer.send_and_wait(
            settings.topic(PaymentAuthorized.topic),
            value=authorized.model_dump_json().encode(),
            key=str(order_id).encode(),
        )

        async def handled():
            return consumer.processed == 3

        await eventually(handled)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()

    assert consumer.dead_lettered == 0
    order, events = await state(sessions, order_id)
    assert (order.status, order.amount) == ("CONFIRMED", 2500)
    assert [entry.step for entry in order.history] == ["created", "reserved", "confirmed"]
    assert events == ["order.created", "order.confirmed"]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(inbox)) == 2


async def test_the_order_worker_process_relays_consumes_and_sweeps(
    settings, sessions, kafka_prefix, tmp_path
):
    settings = settings.model_copy(
        update={"kafka_prefix": kafka_prefix, "kafka_bootstrap_servers": KAFKA}
    )
    paid = await place(settings, sessions)
    overdue = await place(settings.model_copy(update={"saga_deadline_seconds": 0.001}), sessions)
    port = free_port()
    env = {
        "ORDER_DATABASE_URL": settings.database_url.get_secret_value(),
        "ORDER_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "ORDER_KAFKA_PREFIX": kafka_prefix,
        "ORDER_WORKER_PORT": str(port),
        "ORDER_DEADLINE_SWEEP_INTERVAL_SECONDS": "0.2",
    }
    worker = Process("order-worker", env, health_port=port, logs=tmp_path)
    producer = create_producer(settings)
    await producer.start()
    worker.start()
    try:
        await worker.wait_ready()
        # The relay publishes both orders; the sweep cancels the one past its deadline.
        records = await read_topic(settings.topic("orders"), 3)
        await _publish(producer, settings, paid, RESERVED)
        await _publish(producer, settings, paid, AUTHORIZED)

        async def confirmed():
            return (await state(sessions, paid))[0].status == "CONFIRMED"

        await eventually(confirmed)
        records = await read_topic(settings.topic("orders"), 4)
    finally:
        code = worker.stop()
        await producer.stop()
    assert code in (0, -signal.SIGTERM), worker.tail()
    published = [Envelope.model_validate_json(record.value) for record in records]
    assert sorted((event.order_id == paid, event.type) for event in published) == [
        (False, "order.cancelled"),
        (False, "order.created"),
        (True, "order.confirmed"),
        (True, "order.created"),
    ]
    assert all(event.order_id in {paid, overdue} for event in published)
    order, events = await state(sessions, overdue)
    assert (order.status, order.cancel_reason) == ("CANCELLED", "deadline_exceeded")
    assert events == []  # every row the relay published is deleted
