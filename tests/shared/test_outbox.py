"""The outbox against real Postgres and Kafka (using the order database's migrated tables)."""

import asyncio
import json
import uuid
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.events import OrderCreated, OrderLine
from mercato_shared.kafka import create_producer
from mercato_shared.outbox import OutboxRelay, add_event
from mercato_shared.settings import ServiceSettings
from order_service.models import outbox
from tests.infra import KAFKA, eventually, random_prefix
from tests.kafka_tools import end_offsets, ensure_topics, read_topic


@pytest.fixture
async def env(order_db):
    settings = ServiceSettings(
        service_name="outbox-test",
        database_url=order_db,
        kafka_bootstrap_servers=KAFKA,
        kafka_prefix=random_prefix(),
    )
    await ensure_topics(KAFKA, [settings.topic("orders")], partitions=3)
    engine = create_engine(settings)
    yield settings, engine, create_sessionmaker(engine)
    await engine.dispose()


def _relay(settings, engine, **kwargs):
    return OutboxRelay(
        engine=engine, outbox=outbox, producer_factory=lambda: create_producer(settings), **kwargs
    )


async def _write(sessions, settings, order_id):
    payload = OrderCreated(customer_id="c", lines=[OrderLine(sku="S", quantity=1)])
    async with transaction(sessions) as session:
        envelope = await add_event(
            session, payload, order_id=order_id, topic=settings.topic("orders")
        )
    return envelope.id


async def _outbox_size(sessions):
    async with transaction(sessions) as session:
        return await session.scalar(select(func.count()).select_from(outbox))


def _ids_by_key(records):
    by_key = defaultdict(list)
    for record in records:
        by_key[record.key.decode()].append(uuid.UUID(json.loads(record.value)["id"]))
    return by_key


async def test_relay_publishes_in_write_order_per_order_and_deletes_rows(env):
    settings, engine, sessions = env
    orders = [uuid.uuid4() for _ in range(4)]
    written = defaultdict(list)
    for i in range(20):
        order_id = orders[i % 4]
        written[str(order_id)].append(await _write(sessions, settings, order_id))

    relay = _relay(settings, engine, batch_size=7)
    try:
        while await relay.relay_once():
            pass
    finally:
        await relay.close()

    assert await _outbox_size(sessions) == 0
    records = await read_topic(settings.topic("orders"), 20)
    assert _ids_by_key(records) == written


async def test_event_of_a_rolled_back_transaction_is_never_written(env):
    settings, _, sessions = env
    payload = OrderCreated(customer_id="c", lines=[])

    async def write_then_fail():
        async with transaction(sessions) as session:
            await add_event(session, payload, order_id=uuid.uuid4(), topic=settings.topic("orders"))
            raise RuntimeError("state change failed")

    with pytest.raises(RuntimeError, match="state change failed"):
        await write_then_fail()
    assert await _outbox_size(sessions) == 0


async def test_two_relays_deliver_every_row_once_and_in_order(env):
    settings, engine, sessions = env
    relays = [_relay(settings, engine, batch_size=5, poll_interval=0.05) for _ in range(2)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        orders = [uuid.uuid4() for _ in range(5)]
        written = defaultdict(list)
        for i in range(60):
            order_id = orders[i % 5]
            written[str(order_id)].append(await _write(sessions, settings, order_id))
        await eventually(lambda: _is_empty(sessions), within=30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(relay.published for relay in relays) == 60
    records = await read_topic(settings.topic("orders"), 60)
    assert _ids_by_key(records) == written
    # The relays raced for the rows, and none of them published one twice.
    assert sum((await end_offsets([settings.topic("orders")], partitions=3)).values()) == 60


async def test_when_the_leading_relay_loses_its_connection_the_other_takes_over(env, order_db):
    settings, engine, sessions = env
    relays = [_relay(settings, engine, batch_size=5, poll_interval=0.05) for _ in range(2)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        orders = [uuid.uuid4() for _ in range(3)]
        written = defaultdict(list)
        for i in range(15):
            written[str(orders[i % 3])].append(await _write(sessions, settings, orders[i % 3]))
        await eventually(lambda: _is_empty(sessions), within=30)
        leader = next(relay for relay in relays if relay._leading)
        # The server ends the leader's session, as a restart or a network cut would.
        async with engine.connect() as conn:
            await conn.execute(select(func.pg_terminate_backend(leader._conn.get_server_pid())))
        for i in range(15):
            written[str(orders[i % 3])].append(await _write(sessions, settings, orders[i % 3]))
        await eventually(lambda: _is_empty(sessions), within=30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    published = sum(relay.published for relay in relays)
    assert published >= 30
    records = await read_topic(settings.topic("orders"), published)
    # At least once, in write order per order: a repeat is of an event already delivered.
    delivered = {key: list(dict.fromkeys(ids)) for key, ids in _ids_by_key(records).items()}
    assert delivered == written


async def _is_empty(sessions):
    return await _outbox_size(sessions) == 0


async def test_relay_is_woken_by_notify_not_by_its_poll(env):
    settings, engine, sessions = env
    relay = _relay(settings, engine, poll_interval=60)
    task = asyncio.create_task(relay.run())
    try:
        # Let the relay finish its first (empty) pass and go to sleep on its long poll.
        await eventually(lambda: _listening(relay), within=10)
        await asyncio.sleep(0.2)
        await _write(sessions, settings, uuid.uuid4())
        await eventually(lambda: _published(relay), within=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _listening(relay):
    return relay._conn is not None


async def _published(relay):
    return relay.published == 1


class _WritesDuringRound(OutboxRelay):
    """A relay whose first round sees a row committed while it runs (its NOTIFY included)."""

    def __init__(self, *args, write, **kwargs):
        super().__init__(*args, **kwargs)
        self._write = write

    async def relay_once(self):
        sent = await super().relay_once()
        if self._write is not None:
            write, self._write = self._write, None
            await write()
            await asyncio.sleep(0.3)  # the notification arrives before this round ends
        return sent


async def test_row_committed_during_a_round_is_not_left_for_the_poll(env):
    settings, engine, sessions = env
    relay = _WritesDuringRound(
        engine=engine,
        outbox=outbox,
        producer_factory=lambda: create_producer(settings),
        poll_interval=60,
        write=lambda: _write(sessions, settings, uuid.uuid4()),
    )
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _published(relay), within=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
