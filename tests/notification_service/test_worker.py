"""The notification worker's consumer through real Kafka, Postgres and a mail catcher."""

import asyncio
import uuid

import pytest

from mercato_ops.mailcatcher import MailCatcher
from mercato_shared.consumer import EventConsumer
from mercato_shared.db import create_engine, create_sessionmaker
from mercato_shared.events import (
    CancelReason,
    Envelope,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderLine,
)
from mercato_shared.kafka import create_producer
from notification_service.settings import NotificationSettings
from notification_service.worker import build_spec
from tests.infra import KAFKA, eventually
from tests.notification_service.support import stored


@pytest.fixture
def settings(notification_db, catcher_settings, kafka_prefix):
    return NotificationSettings(
        database_url=notification_db,
        kafka_bootstrap_servers=KAFKA,
        kafka_prefix=kafka_prefix,
        consumer_retry_backoff_seconds=0.05,
        smtp_port=catcher_settings.smtp_port,
        smtp_timeout_seconds=5,
    )


@pytest.fixture
async def worker(settings):
    """(consumer, sessions, publish): the worker's consumer, not started yet."""
    spec = build_spec(settings)
    engine = create_engine(settings)
    producer = create_producer(settings)
    await producer.start()

    async def dead_letters():
        return producer

    consumer = EventConsumer(
        settings=settings,
        topics=[settings.topic(name) for name in spec.topics],
        handlers=spec.handlers,
        sessions=create_sessionmaker(engine),
        inbox_table=spec.inbox,
        dead_letters=dead_letters,
    )

    async def publish(envelope: Envelope) -> None:
        await producer.send_and_wait(
            settings.topic("orders"),
            value=envelope.model_dump_json().encode(),
            key=str(envelope.order_id).encode(),
        )

    yield consumer, create_sessionmaker(engine), publish
    await producer.stop()
    await engine.dispose()


async def test_each_terminal_order_is_mailed_once(worker, catcher, mails):
    consumer, sessions, publish = worker
    paid, refused = uuid.uuid4(), uuid.uuid4()
    created = OrderCreated(customer_id="alice", lines=[OrderLine(sku="A", quantity=1)])
    confirmed = Envelope.wrap(
        OrderConfirmed(customer_id="alice", email="alice@example.test", amount=999, currency="EUR"),
        order_id=paid,
    )
    await publish(Envelope.wrap(created, order_id=paid))
    await publish(confirmed)
    await publish(confirmed)  # redelivered: the inbox skips it
    await publish(
        Envelope.wrap(
            OrderCancelled(customer_id="bob", reason=CancelReason.PAYMENT_DECLINED),
            order_id=refused,
        )
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def all_handled():
            return consumer.processed == 3

        await eventually(all_handled, within=60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    delivered = {m["message_id"]: m for m in await mails(catcher)}
    assert set(delivered) == {f"<order-{paid}@mercato.local>", f"<order-{refused}@mercato.local>"}
    assert all(m["deliveries"] == 1 for m in delivered.values())
    # The two orders' partitions may mail side by side, each on a connection of its own.
    assert 1 <= catcher.connections <= 2
    assert delivered[f"<order-{paid}@mercato.local>"]["to"] == ["alice@example.test"]
    assert (await stored(sessions, paid)).kind == "order.confirmed"
    assert (await stored(sessions, refused)).kind == "order.cancelled"
    assert consumer.dead_lettered == 0


async def test_the_partition_waits_for_the_mail_server(worker, catcher_settings, mails, caplog):
    consumer, sessions, publish = worker
    order_id = uuid.uuid4()
    await publish(
        Envelope.wrap(
            OrderCancelled(customer_id="bob", reason=CancelReason.CUSTOMER_CANCELLED),
            order_id=order_id,
        )
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def retried_twice():
            retries = [r for r in caplog.records if "transient failure" in r.getMessage()]
            return len(retries) >= 2

        # No mail server yet: the event is retried, not dead-lettered, and nothing is stored.
        await eventually(retried_twice, within=60)
        assert await stored(sessions, order_id) is None
        assert consumer.processed == 0

        async with MailCatcher(catcher_settings) as catcher:

            async def mailed_and_committed():
                return consumer.processed == 1 and await mails(catcher)

            [mail] = await eventually(mailed_and_committed, within=60)
        assert mail["message_id"] == f"<order-{order_id}@mercato.local>"
        assert mail["to"] == ["bob@customers.mercato.test"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await stored(sessions, order_id)).sent_at is not None
    assert consumer.dead_lettered == 0
