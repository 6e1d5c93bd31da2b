"""The order service's SQL against a real, migrated Postgres database."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from mercato_shared.db import transaction
from mercato_shared.events import OrderCreated, OrderLine
from mercato_shared.identity import Identity, Role
from mercato_shared.outbox import outbox_row
from order_service import repository
from order_service.models import OrderStatus
from tests.order_service.support import place, state


def _new_order(settings, customer="alice"):
    """The values repository.place_order writes: the order, its lines, its event row."""
    order_id = uuid.uuid4()
    event = OrderCreated(customer_id=customer, lines=[OrderLine(sku="MUG-BLUE", quantity=1)])
    _, row = outbox_row(event, order_id=order_id, topic=settings.topic("orders"))
    order = {
        "id": order_id,
        "customer_id": customer,
        "email": None,
        "deadline_at": datetime.now(UTC) + timedelta(minutes=1),
    }
    return order, [("MUG-BLUE", 1)], row


async def test_advance_moves_only_a_pending_order_and_records_its_step(env):
    settings, sessions = env
    order_id = await place(settings, sessions, email="alice@example.com")
    async with transaction(sessions) as session:
        moved = await repository.advance(
            session,
            order_id,
            status=OrderStatus.CONFIRMED,
            step="confirmed",
            amount=2500,
            currency="EUR",
        )
    assert moved is not None
    assert (moved.customer_id, moved.email) == ("alice", "alice@example.com")
    async with transaction(sessions) as session:
        again = await repository.advance(
            session, order_id, status=OrderStatus.CANCELLED, step="cancelled", reason="late"
        )
        unknown = await repository.advance(
            session, uuid.uuid4(), status=OrderStatus.CONFIRMED, step="confirmed"
        )
    assert (again, unknown) == (None, None)
    order, events = await state(sessions, order_id)
    assert (order.status, order.amount, order.currency, order.cancel_reason) == (
        "CONFIRMED",
        2500,
        "EUR",
        None,
    )
    assert [entry.step for entry in order.history] == ["created", "confirmed"]
    # Writing the transition's event is the saga's part, not the repository's.
    assert events == ["order.created"]


async def test_an_order_is_written_with_its_lines_history_and_event(env):
    settings, sessions = env
    order, lines, row = _new_order(settings)
    async with sessions.kw["bind"].connect() as conn:
        placed = await repository.place_order(conn, order=order, lines=lines, event=row, key=None)
        await conn.commit()
    assert placed.held
    assert placed.known is None
    assert placed.written is not None
    stored, events = await state(sessions, order["id"])
    assert (stored.customer_id, stored.status) == ("alice", "PENDING")
    assert [(line.sku, line.quantity) for line in stored.lines] == [("MUG-BLUE", 1)]
    assert [entry.step for entry in stored.history] == ["created"]
    assert events == ["order.created"]
    async with transaction(sessions) as session:
        assert await repository.order_status(session, order["id"]) == "PENDING"
        assert await repository.order_status(session, uuid.uuid4()) is None


async def test_a_second_placement_under_a_key_finds_the_first_and_writes_nothing(env):
    settings, sessions = env
    first, lines, row = _new_order(settings)
    second, _, second_row = _new_order(settings)
    engine = sessions.kw["bind"]
    async with engine.connect() as conn:
        made = await repository.place_order(
            conn, order=first, lines=lines, event=row, key=("key-1", "hash-1")
        )
        await conn.commit()
    async with engine.connect() as conn:
        again = await repository.place_order(
            conn, order=second, lines=lines, event=second_row, key=("key-1", "hash-2")
        )
        await conn.commit()
    assert made.written is not None
    assert (again.held, again.known, again.written) == (True, ("hash-1", first["id"]), None)
    async with transaction(sessions) as session:
        assert await repository.order_status(session, second["id"]) is None


async def test_a_key_held_by_one_transaction_is_refused_to_another(env):
    _, sessions = env
    async with transaction(sessions) as holder:
        assert await repository.try_lock_key(holder, "alice", "key-1")
        async with transaction(sessions) as other:
            assert not await repository.try_lock_key(other, "alice", "key-1")
            # The lock is the customer's key: another customer's same key is free.
            assert await repository.try_lock_key(other, "bob", "key-1")
    async with transaction(sessions) as later:
        assert await repository.try_lock_key(later, "alice", "key-1")


async def test_overdue_orders_are_pending_past_their_deadline_and_not_locked_elsewhere(env):
    settings, sessions = env
    short = settings.model_copy(update={"saga_deadline_seconds": 0.001})
    locked, free, done = [await place(short, sessions) for _ in range(3)]
    fresh = await place(settings, sessions)
    async with transaction(sessions) as session:
        await repository.advance(session, done, status=OrderStatus.CONFIRMED, step="confirmed")
    await asyncio.sleep(0.01)  # past the 1 ms deadline; nothing below depends on timing
    async with transaction(sessions) as holder:
        assert await repository.get_order(holder, locked, for_update=True) is not None
        async with transaction(sessions) as sweeper:
            overdue = await repository.overdue_orders(sweeper, now=datetime.now(UTC), limit=10)
            assert [order.id for order in overdue] == [free]
    async with transaction(sessions) as sweeper:
        overdue = await repository.overdue_orders(sweeper, now=datetime.now(UTC), limit=10)
        assert {order.id for order in overdue} == {locked, free}
        assert fresh not in {order.id for order in overdue}


async def test_listing_is_newest_first_per_customer_with_the_total(env):
    settings, sessions = env
    bob = Identity(subject="bob", roles=frozenset({Role.CUSTOMER}))
    older = await place(settings, sessions)
    newer = await place(settings, sessions)
    await place(settings, sessions, identity=bob)
    async with transaction(sessions) as session:
        alices, total = await repository.list_orders(
            session, customer_id="alice", limit=1, offset=0
        )
        assert ([order.id for order in alices], total) == ([newer], 2)
        alices, _ = await repository.list_orders(session, customer_id="alice", limit=5, offset=1)
        assert [order.id for order in alices] == [older]
        everyone, total = await repository.list_orders(
            session, customer_id=None, limit=50, offset=0
        )
        assert (len(everyone), total) == (3, 3)


async def test_purge_forgets_only_keys_older_than_the_cutoff(env):
    settings, sessions = env
    await place(settings, sessions, idempotency_key="key-1")
    async with transaction(sessions) as session:
        kept = await repository.purge_keys(
            session, older_than=datetime.now(UTC) - timedelta(hours=1)
        )
    async with transaction(sessions) as session:
        purged = await repository.purge_keys(
            session, older_than=datetime.now(UTC) + timedelta(seconds=1)
        )
    assert (kept, purged) == (0, 1)
