"""Batch consumption against real Postgres and Kafka: one transaction per fetched batch of a
partition, a poison event isolated by splitting, redeliveries and ordering."""

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from sqlalchemy import func, select, text

from mercato_shared.consumer import is_transient
from mercato_shared.db import serial, transaction
from mercato_shared.events import Envelope, OrderCreated
from mercato_shared.outbox import add_event
from order_service.models import inbox, outbox
from tests.infra import eventually
from tests.kafka_tools import read_topic
from tests.shared.support import consumer_env, consumer_for, run_until

BATCH = 50


@pytest.fixture
async def env(order_db):
    async with consumer_env(order_db, service_name="batch-test", max_attempts=3) as env:
        yield env


class Effects:
    """A handler whose effect is an outbox row per event, written in the batch's transaction.

    It remembers every run (rolled back or not) with the transaction it ran in, and what the
    session showed it of the same order's earlier effects.
    """

    def __init__(self, poison=()):
        self.poison = set(poison)
        self.runs: list[tuple[uuid.UUID, int]] = []
        self.seen_before: dict[uuid.UUID, int] = {}

    async def __call__(self, session, envelope):
        txid = await session.scalar(text("SELECT txid_current()"))
        self.runs.append((envelope.id, txid))
        self.seen_before[envelope.id] = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.key == str(envelope.order_id))
        )
        if envelope.id in self.poison:
            raise ValueError("handler refuses this event")
        event = OrderCreated(customer_id=str(envelope.id), lines=[])
        await add_event(session, event, order_id=envelope.order_id, topic="elsewhere")

    def attempts(self, event_id):
        return sum(1 for run, _ in self.runs if run == event_id)


async def _publish_all(settings, producer, envelopes):
    """Sent before the consumer starts, so that one fetch returns them together."""
    for envelope in envelopes:
        await producer.send(
            settings.topic("orders"),
            value=envelope.model_dump_json().encode(),
            key=str(envelope.order_id).encode(),
            headers=[("event_type", envelope.type.encode())],
        )
    await producer.flush()


def _envelope(order_id=None):
    return Envelope.wrap(OrderCreated(customer_id="c", lines=[]), order_id=order_id or uuid.uuid4())


async def _effects_per_order(sessions):
    async with transaction(sessions) as session:
        rows = await session.execute(
            select(outbox.c.key, func.count()).select_from(outbox).group_by(outbox.c.key)
        )
        return {uuid.UUID(key): count for key, count in rows.all()}


async def _inbox_ids(sessions):
    async with transaction(sessions) as session:
        return set((await session.execute(select(inbox.c.event_id))).scalars())


async def test_a_poison_event_in_a_batch_is_dead_lettered_alone(env):
    settings, sessions, producer = env
    envelopes = [_envelope() for _ in range(BATCH)]
    poison = envelopes[BATCH // 2 + 3]
    await _publish_all(settings, producer, envelopes)
    handler = Effects(poison={poison.id})
    consumer = consumer_for(settings, sessions, producer, handler)

    async def all_done():
        return consumer.processed == BATCH - 1 and consumer.dead_lettered == 1

    await run_until(consumer, all_done, within=60)
    good = [e for e in envelopes if e is not poison]
    effects = await _effects_per_order(sessions)
    # Each neighbour's effect committed exactly once; the poison's never.
    assert effects == {e.order_id: 1 for e in good}
    assert await _inbox_ids(sessions) == {e.id for e in good}
    # Alone, it had its retries; the splits before that were failures of its batches.
    assert handler.attempts(poison.id) >= settings.consumer_max_attempts
    letters = await read_topic(settings.dead_letter_topic, 1)
    assert [Envelope.model_validate_json(letter.value).id for letter in letters] == [poison.id]
    # Neighbours were applied in batches, not one transaction each.
    committed = dict(handler.runs)
    assert len({committed[e.id] for e in good}) < len(good) // 4


async def test_the_same_batch_delivered_twice_changes_nothing(env):
    settings, sessions, producer = env
    envelopes = [_envelope() for _ in range(20)]
    await _publish_all(settings, producer, envelopes)
    first = Effects()
    consumer = consumer_for(settings, sessions, producer, first)

    async def all_done():
        return consumer.processed == len(envelopes)

    await run_until(consumer, all_done, within=60)
    before = await _effects_per_order(sessions)
    assert before == {e.order_id: 1 for e in envelopes}

    # Another group reads the topic from its start: every record comes again, in one batch.
    rewound = settings.model_copy(update={"service_name": "batch-test-rewound"})
    again = Effects()
    replay = consumer_for(rewound, sessions, producer, again)

    async def replayed():
        return replay.processed == len(envelopes)

    await run_until(replay, replayed, within=60)
    assert again.runs == []
    assert await _effects_per_order(sessions) == before


async def test_events_of_one_order_in_a_batch_are_applied_in_offset_order(env):
    settings, sessions, producer = env
    order_id = uuid.uuid4()
    earlier, later = _envelope(order_id), _envelope(order_id)
    others = [_envelope() for _ in range(10)]
    await _publish_all(settings, producer, [*others[:5], earlier, *others[5:], later])
    handler = Effects()
    consumer = consumer_for(settings, sessions, producer, handler)

    async def all_done():
        return consumer.processed == 12

    await run_until(consumer, all_done, within=60)
    order = [event_id for event_id, _ in handler.runs if event_id in (earlier.id, later.id)]
    assert order == [earlier.id, later.id]
    # The later event saw the earlier one's effect: one transaction, applied in order.
    assert handler.seen_before[earlier.id] == 0
    assert handler.seen_before[later.id] == 1
    txids = dict(handler.runs)
    assert txids[earlier.id] == txids[later.id]
    assert (await _effects_per_order(sessions))[order_id] == 2


async def test_a_record_repeated_inside_one_batch_is_applied_once(env):
    settings, sessions, producer = env
    repeated, other = _envelope(), _envelope()
    await _publish_all(settings, producer, [repeated, other, repeated])
    handler = Effects()
    consumer = consumer_for(settings, sessions, producer, handler)

    async def all_done():
        return consumer.processed == 3

    await run_until(consumer, all_done, within=60)
    assert handler.attempts(repeated.id) == 1
    assert await _effects_per_order(sessions) == {repeated.order_id: 1, other.order_id: 1}


async def test_events_without_a_handler_are_skipped_by_their_header(env):
    settings, sessions, producer = env
    handled = _envelope()
    # Declared as a type this consumer has no handler for, with a body no parser accepts:
    # skipping it by its header is the only way it is not dead-lettered.
    await producer.send(
        settings.topic("orders"), value=b"\x00opaque", headers=[("event_type", b"order.other")]
    )
    await _publish_all(settings, producer, [handled])
    handler = Effects()
    consumer = consumer_for(settings, sessions, producer, handler)

    async def handled_one():
        return consumer.processed == 1

    await run_until(consumer, handled_one, within=60)
    assert consumer.dead_lettered == 0
    assert [event_id for event_id, _ in handler.runs] == [handled.id]


async def test_with_concurrency_orders_wait_together_and_each_order_in_order(env):
    settings, sessions, producer = env
    waiting = [_envelope() for _ in range(4)]
    order_id = uuid.uuid4()
    first, second = _envelope(order_id), _envelope(order_id)
    await _publish_all(settings, producer, [first, *waiting, second])
    all_waiting = asyncio.Event()
    started: list[uuid.UUID] = []
    timeline: list[tuple[str, uuid.UUID]] = []

    async def handler(session, envelope):
        started.append(envelope.id)
        timeline.append(("start", envelope.id))
        async with serial(session):
            event = OrderCreated(customer_id=str(envelope.id), lines=[])
            await add_event(session, event, order_id=envelope.order_id, topic="elsewhere")
        if envelope.id in {e.id for e in waiting}:
            # A remote call that answers only once every other order's call is under way:
            # handled one after the other, these would never all be waiting at once.
            if sum(e.id in started for e in waiting) == len(waiting):
                all_waiting.set()
            await asyncio.wait_for(all_waiting.wait(), 10)
        else:
            await asyncio.sleep(0.05)
        timeline.append(("end", envelope.id))

    consumer = consumer_for(settings, sessions, producer, handler, concurrency=6)

    async def all_done():
        return consumer.processed == 6

    await run_until(consumer, all_done, within=60)
    assert all_waiting.is_set()
    # One order's two events never overlapped, and kept their offset order.
    assert timeline.index(("start", second.id)) > timeline.index(("end", first.id))
    effects = await _effects_per_order(sessions)
    assert effects == {order_id: 2, **{e.order_id: 1 for e in waiting}}


async def test_a_deadlock_between_two_transactions_counts_as_transient(env):
    _, sessions, _ = env
    locks = "SELECT pg_advisory_xact_lock(:first), pg_advisory_xact_lock(:second)"
    holding = [asyncio.Event(), asyncio.Event()]

    async def batch(index, first, second):
        async with transaction(sessions) as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": first})
            holding[index].set()
            await asyncio.wait_for(holding[1 - index].wait(), 10)
            await session.execute(text(locks), {"first": first, "second": second})

    # Each holds one lock and asks for the other's: Postgres rolls one of them back.
    outcomes = await asyncio.gather(batch(0, 1, 2), batch(1, 2, 1), return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(failures) == 1
    assert is_transient(failures[0])


async def test_lock_batch_runs_first_with_the_new_events_only(env):
    settings, sessions, producer = env
    seen, fresh = _envelope(), _envelope()
    await _publish_all(settings, producer, [seen])
    first = consumer_for(settings, sessions, producer, Effects())

    async def one_done():
        return first.processed == 1

    await run_until(first, one_done, within=60)
    rewound = settings.model_copy(update={"service_name": "batch-test-locked"})
    await _publish_all(settings, producer, [fresh])
    calls: list[tuple[str, list[uuid.UUID]]] = []

    async def lock_batch(session, envelopes):
        calls.append(("lock", [e.id for e in envelopes]))

    async def handler(session, envelope):
        calls.append(("step", [envelope.id]))

    consumer = consumer_for(rewound, sessions, producer, handler, lock_batch=lock_batch)

    async def both_read():
        return consumer.processed == 2

    await run_until(consumer, both_read, within=60)
    # The redelivered event is neither locked for nor stepped; the new one, lock first.
    assert calls == [("lock", [fresh.id]), ("step", [fresh.id])]


async def test_an_offset_of_a_partition_revoked_mid_batch_is_not_committed(env):
    """A rebalance can revoke a partition while its batch is still being handled; the batch
    then ends after the revocation's commit, and its offset belongs to another member."""
    settings, sessions, producer = env
    await _publish_all(settings, producer, [_envelope()])
    consumer = consumer_for(settings, sessions, producer, Effects())

    async def handled():
        return consumer.processed == 1

    task = asyncio.create_task(consumer.run())
    try:
        await eventually(handled)
        revoked = TopicPartition(settings.topic("orders"), 7)  # not this member's
        consumer._pending[revoked] = 42
        await consumer.commit_pending()
        assert not task.done()
        assert consumer._pending == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_events_before_one_failing_transiently_commit_meanwhile(env):
    """An event whose remote call keeps failing (transiently) holds its partition, but the
    events fetched before it in its batch commit without waiting for it."""
    settings, sessions, producer = env
    batch = [_envelope() for _ in range(4)]
    stuck = batch[-1]
    await _publish_all(settings, producer, batch)
    outage = asyncio.Event()
    outage.set()
    effects = Effects()

    async def handler(session, envelope):
        if envelope.id == stuck.id and outage.is_set():
            raise ConnectionError("the processor does not answer")
        await effects(session, envelope)

    consumer = consumer_for(settings, sessions, producer, handler)

    async def others_committed():
        done = await _effects_per_order(sessions)
        return {e.order_id for e in batch if e is not stuck} <= done.keys()

    async def all_done():
        if await others_committed():
            outage.clear()  # the processor answers again
        return consumer.processed == 4

    await run_until(consumer, all_done, within=60)
    assert await _effects_per_order(sessions) == {e.order_id: 1 for e in batch}
    assert consumer.dead_lettered == 0
