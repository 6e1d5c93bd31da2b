"""The idempotent consumer against real Postgres and Kafka."""

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from sqlalchemy import func, select

from mercato_shared.consumer import EventConsumer
from mercato_shared.db import transaction
from mercato_shared.events import Envelope, OrderCreated
from order_service.models import inbox
from tests.infra import KAFKA, eventually
from tests.kafka_tools import ensure_topics, read_topic
from tests.shared.support import consumer_env, consumer_for, run_until


class Recorder:
    """A handler that remembers what it saw and can be told to fail."""

    def __init__(self, fail_on=()):
        self.seen: list[uuid.UUID] = []
        self.fail_on = set(fail_on)

    async def __call__(self, session, envelope):
        if envelope.id in self.fail_on:
            raise ValueError("handler refuses this event")
        self.seen.append(envelope.id)


@pytest.fixture
async def env(order_db):
    async with consumer_env(order_db, service_name="consumer-test", max_attempts=2) as env:
        yield env


def _envelope():
    return Envelope.wrap(OrderCreated(customer_id="c", lines=[]), order_id=uuid.uuid4())


async def _publish(producer, topic, value: bytes, key=b"k"):
    await producer.send_and_wait(topic, value=value, key=key)


async def _inbox_count(sessions):
    async with transaction(sessions) as session:
        return await session.scalar(select(func.count()).select_from(inbox))


async def test_redelivered_event_is_handled_once(env):
    settings, sessions, producer = env
    first, second = _envelope(), _envelope()
    for envelope in (first, first, second):
        await _publish(producer, settings.topic("orders"), envelope.model_dump_json().encode())
    handler = Recorder()
    consumer = consumer_for(settings, sessions, producer, handler)

    async def all_consumed():
        return consumer.processed == 3

    await run_until(consumer, all_consumed)
    assert handler.seen == [first.id, second.id]
    assert await _inbox_count(sessions) == 2


async def test_failing_and_malformed_events_go_to_the_dead_letter_topic(env):
    settings, sessions, producer = env
    bad, good = _envelope(), _envelope()
    await _publish(producer, settings.topic("orders"), b"{not json")
    await _publish(producer, settings.topic("orders"), bad.model_dump_json().encode())
    await _publish(producer, settings.topic("orders"), good.model_dump_json().encode())
    handler = Recorder(fail_on={bad.id})
    consumer = consumer_for(settings, sessions, producer, handler)

    async def good_handled():
        return handler.seen == [good.id]

    await run_until(consumer, good_handled)
    assert consumer.dead_lettered == 2
    letters = await read_topic(settings.dead_letter_topic, 2)
    headers = [dict(letter.headers) for letter in letters]
    assert letters[0].value == b"{not json"
    assert b"ValidationError" in headers[0]["error"]
    assert b"handler refuses this event" in headers[1]["error"]
    assert headers[1]["original_topic"] == settings.topic("orders").encode()
    assert headers[1]["original_offset"] == b"1"
    # The failed handler's transaction rolled back its inbox row with it.
    assert await _inbox_count(sessions) == 1


async def test_offsets_are_committed_after_processing(env):
    settings, sessions, producer = env
    for _ in range(3):
        await _publish(producer, settings.topic("orders"), _envelope().model_dump_json().encode())
    handler = Recorder()
    consumer = consumer_for(settings, sessions, producer, handler)

    async def committed():
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.consumer_group)
        finally:
            await admin.close()
        meta = offsets.get(TopicPartition(settings.topic("orders"), 0))
        return meta is not None and meta.offset == 3

    await run_until(consumer, committed)
    assert len(handler.seen) == 3


async def test_consumer_waits_out_an_unreachable_broker(env, caplog):
    settings, sessions, producer = env
    offline = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    consumer = consumer_for(offline, sessions, producer, Recorder())
    task = asyncio.create_task(consumer.run())

    async def retried_twice():
        return sum("Kafka unreachable" in r.getMessage() for r in caplog.records) >= 2

    try:
        await eventually(retried_twice, within=30)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_handled_offsets_are_committed_when_the_consumer_stops(env):
    settings, sessions, producer = env
    for _ in range(3):
        await _publish(producer, settings.topic("orders"), _envelope().model_dump_json().encode())
    handler = Recorder()
    consumer = consumer_for(settings, sessions, producer, handler, commit_interval=3600)

    async def all_handled():
        return consumer.processed == 3

    await run_until(consumer, all_handled)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.consumer_group)
    finally:
        await admin.close()
    assert offsets[TopicPartition(settings.topic("orders"), 0)].offset == 3


async def test_partitions_are_handled_side_by_side(env):
    settings, sessions, producer = env
    topic = settings.topic("wide")
    await ensure_topics(KAFKA, [topic], partitions=2)
    first, second = _envelope(), _envelope()
    await producer.send_and_wait(topic, value=first.model_dump_json().encode(), partition=0)
    await producer.send_and_wait(topic, value=second.model_dump_json().encode(), partition=1)
    second_handled = asyncio.Event()
    overlapped = []

    async def handler(session, envelope):
        if envelope.id == first.id:
            # Handled one after the other, this would wait for an event queued behind it.
            await asyncio.wait_for(second_handled.wait(), 5)
            overlapped.append(True)
        else:
            second_handled.set()

    consumer = EventConsumer(
        settings=settings,
        topics=[topic],
        handlers={"order.created": handler},
        sessions=sessions,
        inbox_table=inbox,
        dead_letters=lambda: asyncio.sleep(0, producer),
    )

    async def both_handled():
        return consumer.processed == 2

    await run_until(consumer, both_handled)
    assert overlapped == [True]
