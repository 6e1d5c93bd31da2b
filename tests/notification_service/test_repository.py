"""The notification service's SQL against a real, migrated Postgres database."""

import uuid
from datetime import UTC, datetime

import pytest

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from notification_service import repository
from notification_service.settings import NotificationSettings
from tests.notification_service.support import stored


@pytest.fixture
async def sessions(notification_db):
    engine = create_engine(NotificationSettings(database_url=notification_db))
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _insert(session, order_id, customer="alice", kind="order.confirmed"):
    return await repository.insert_if_absent(
        session,
        order_id=order_id,
        customer_id=customer,
        recipient=f"{customer}@example.test",
        kind=kind,
        subject="Your order",
        body="...",
        message_id=f"<order-{order_id}@mercato.local>",
    )


async def test_an_order_gets_one_notification_whichever_event_comes_first(sessions):
    order_id = uuid.uuid4()
    async with transaction(sessions) as session:
        first = await _insert(session, order_id)
    async with transaction(sessions) as session:
        second = await _insert(session, order_id, kind="order.cancelled")
    assert first is not None
    assert second is None
    notification = await stored(sessions, order_id)
    assert (notification.id, notification.kind, notification.sent_at) == (
        first,
        "order.confirmed",
        None,
    )


async def test_marking_sent_records_the_time(sessions):
    order_id = uuid.uuid4()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with transaction(sessions) as session:
        notification_id = await _insert(session, order_id)
        await repository.mark_sent(session, notification_id, at=at)
    assert (await stored(sessions, order_id)).sent_at == at


async def test_listing_filters_by_customer_and_order_and_counts_alike(sessions):
    orders = [uuid.uuid4() for _ in range(3)]
    async with transaction(sessions) as session:
        for order_id, customer in zip(orders, ("alice", "alice", "bob"), strict=True):
            await _insert(session, order_id, customer=customer)
    async with transaction(sessions) as session:
        alices = await repository.list_notifications(
            session, customer_id="alice", limit=1, offset=0
        )
        alice_total = await repository.count_notifications(session, customer_id="alice")
        one = await repository.list_notifications(
            session, customer_id=None, order_id=orders[2], limit=10, offset=0
        )
        everyone = await repository.count_notifications(session, customer_id=None)
        nobody = await repository.count_notifications(
            session, customer_id="alice", order_id=orders[2]
        )
    assert (len(alices), alice_total) == (1, 2)
    assert [n.customer_id for n in one] == ["bob"]
    assert (everyone, nobody) == (3, 0)
