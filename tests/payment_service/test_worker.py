"""The payment worker over real Kafka: the shared consumer with these handlers, and the process."""

import asyncio
import signal
import uuid

from sqlalchemy import func, select

from mercato_shared.consumer import EventConsumer
from mercato_shared.events import Envelope, PaymentAuthorized, payload_as
from mercato_shared.kafka import create_producer
from payment_service.models import PaymentStatus, inbox
from tests.e2e.processes import Process
from tests.infra import KAFKA, eventually, free_port
from tests.kafka_tools import read_topic
from tests.payment_service.support import Saga, confirmed, reserved


async def _publish(producer, settings, envelope):
    topic = "inventory" if envelope.type.startswith("inventory.") else "orders"
    await producer.send_and_wait(
        settings.topic(topic),
        value=envelope.model_dump_json().encode(),
        key=str(envelope.order_id).encode(),
    )


async def test_the_consumer_skips_a_redelivered_reservation(
    settings, sessions, sandbox, kafka_prefix
):
    settings = settings.model_copy(
        update={"kafka_prefix": kafka_prefix, "kafka_bootstrap_servers": KAFKA}
    )
    saga = Saga(settings, sessions)
    producer = create_producer(settings)
    await producer.start()

    async def dead_letters():
        return producer

    consumer = EventConsumer(
        settings=settings,
        topics=[settings.topic("inventory"), settings.topic("orders")],
        handlers=saga.handlers,
        sessions=sessions,
        inbox_table=inbox,
        dead_letters=dead_letters,
    )
    task = asyncio.create_task(consumer.run())
    order_id = uuid.uuid4()
    try:
        reservation = reserved(order_id)
        await _publish(producer, settings, reservation)
        await _publish(producer, settings, reservation)

        async def authorized():
            payment = await saga.payment(order_id)
            return consumer.processed == 2 and payment.status == PaymentStatus.AUTHORIZED

        await eventually(authorized)
        # order.confirmed only ever follows payment.authorized, so it is sent after it here too.
        await _publish(producer, settings, confirmed(order_id))

        async def captured():
            return (await saga.payment(order_id)).status == PaymentStatus.CAPTURED

        await eventually(captured)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await saga.sandbox.aclose()

    assert consumer.dead_lettered == 0
    ledger = await sandbox.ledger(order_id)
    assert (ledger["authorization_count"], ledger["charged"]) == (1, 2500)
    assert [event.type for event in await saga.events(order_id)] == ["payment.authorized"]
    async with sessions() as session:
        handled = await session.scalar(select(func.count()).select_from(inbox))
    assert handled == 2


async def test_the_payment_worker_process_runs_the_saga(
    settings, sessions, sandbox, kafka_prefix, tmp_path
):
    port = free_port()
    env = {
        "PAYMENT_DATABASE_URL": settings.database_url.get_secret_value(),
        "PAYMENT_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "PAYMENT_KAFKA_PREFIX": kafka_prefix,
        "PAYMENT_WORKER_PORT": str(port),
        "PAYMENT_SANDBOX_URL": sandbox.url,
    }
    worker = Process("payment-worker", env, health_port=port, logs=tmp_path)
    settings = settings.model_copy(
        update={"kafka_prefix": kafka_prefix, "kafka_bootstrap_servers": KAFKA}
    )
    saga = Saga(settings, sessions)
    producer = create_producer(settings)
    await producer.start()
    worker.start()
    order_id = uuid.uuid4()
    try:
        await worker.wait_ready()
        await _publish(producer, settings, reserved(order_id, amount=1999))
        [record] = await read_topic(settings.topic("payments"), 1)
        event = Envelope.model_validate_json(record.value)
        assert event.order_id == order_id
        authorization = payload_as(event, PaymentAuthorized)
        assert authorization.amount == 1999

        await _publish(producer, settings, confirmed(order_id, amount=1999))

        async def captured():
            return (await saga.payment(order_id)).status == PaymentStatus.CAPTURED

        await eventually(captured)
    finally:
        code = worker.stop()
        await producer.stop()
        await saga.sandbox.aclose()
    assert code in (0, -signal.SIGTERM), worker.tail()
    ledger = await sandbox.ledger(order_id)
    assert ledger["authorizations"][0]["id"] == authorization.authorization_id
    assert ledger["charged"] == 1999
