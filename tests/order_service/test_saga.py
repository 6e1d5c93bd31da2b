"""The order state machine: replies from inventory and payment, deadlines, cancellations."""

import asyncio
import uuid

import pytest
from sqlalchemy import select

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.events import (
    Envelope,
    InventoryRejected,
    InventoryReserved,
    PaymentAuthorized,
    PaymentFailed,
    PricedLine,
)
from mercato_shared.identity import Identity, Role
from mercato_shared.problems import ConflictError, NotFoundError
from order_service import service
from order_service.handlers import build_handlers
from order_service.models import Order, outbox
from order_service.schemas import OrderCreate
from order_service.settings import OrderSettings

ALICE = Identity(subject="alice", roles=frozenset({Role.CUSTOMER}))


@pytest.fixture
async def env(order_db):
    settings = OrderSettings(database_url=order_db, kafka_prefix="p.", saga_deadline_seconds=60)
    engine = create_engine(settings)
    yield settings, create_sessionmaker(engine)
    await engine.dispose()


async def _place(settings, sessions, email=None):
    request = OrderCreate.model_validate(
        {"lines": [{"sku": "MUG-BLUE", "quantity": 2}], "email": email}
    )
    engine = sessions.kw["bind"]
    order, _ = await service.place_order(
        autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
        sessions=sessions,
        settings=settings,
        identity=ALICE,
        request=request,
        idempotency_key=None,
    )
    return order.id


async def _deliver(settings, sessions, order_id, payload):
    handlers = build_handlers(settings)
    envelope = Envelope.wrap(payload, order_id=order_id)
    async with transaction(sessions) as session:
        await handlers[envelope.type](session, envelope)


async def _state(sessions, order_id):
    async with transaction(sessions) as session:
        order = (await session.execute(select(Order).where(Order.id == order_id))).scalar_one()
        events = (
            (
                await session.execute(
                    select(outbox.c.event_type)
                    .where(outbox.c.key == str(order_id))
                    .order_by(outbox.c.id)
                )
            )
            .scalars()
            .all()
        )
    return order, list(events)


RESERVED = InventoryReserved(
    customer_id="alice",
    lines=[PricedLine(sku="MUG-BLUE", quantity=2, unit_price=1250)],
    amount=2500,
    currency="EUR",
)
AUTHORIZED = PaymentAuthorized(amount=2500, currency="EUR", authorization_id="auth_1")


async def test_happy_path_reserved_then_authorized_confirms(env):
    settings, sessions = env
    order_id = await _place(settings, sessions, email="alice@example.com")
    await _deliver(settings, sessions, order_id, RESERVED)
    order, _ = await _state(sessions, order_id)
    assert (order.status, order.amount, order.currency) == ("PENDING", 2500, "EUR")
    await _deliver(settings, sessions, order_id, AUTHORIZED)
    order, events = await _state(sessions, order_id)
    assert order.status == "CONFIRMED"
    assert [h.step for h in order.history] == ["created", "reserved", "confirmed"]
    assert events == ["order.created", "order.confirmed"]


async def test_payment_authorized_before_reserved_still_confirms(env):
    settings, sessions = env
    order_id = await _place(settings, sessions)
    await _deliver(settings, sessions, order_id, AUTHORIZED)
    await _deliver(settings, sessions, order_id, RESERVED)  # late: ignored, order is terminal
    order, events = await _state(sessions, order_id)
    assert (order.status, order.amount) == ("CONFIRMED", 2500)
    assert events == ["order.created", "order.confirmed"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (InventoryRejected(reason="out_of_stock", skus=["MUG-BLUE"]), "out_of_stock"),
        (InventoryRejected(reason="unknown_sku", skus=["NOPE"]), "unknown_sku"),
        (PaymentFailed(reason="declined"), "payment_declined"),
        (PaymentFailed(reason="provider_unavailable"), "payment_unavailable"),
    ],
)
async def test_rejections_and_payment_failures_cancel_with_a_reason(env, reply, reason):
    settings, sessions = env
    order_id = await _place(settings, sessions)
    await _deliver(settings, sessions, order_id, reply)
    await _deliver(settings, sessions, order_id, AUTHORIZED)  # too late: changes nothing
    order, events = await _state(sessions, order_id)
    assert (order.status, order.cancel_reason) == ("CANCELLED", reason)
    assert events == ["order.created", "order.cancelled"]


async def test_customer_cancels_at_each_stage_and_not_after_the_end(env):
    settings, sessions = env
    for stage in ("pending", "reserved"):
        order_id = await _place(settings, sessions)
        if stage == "reserved":
            await _deliver(settings, sessions, order_id, RESERVED)
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=ALICE, order_id=order_id
        )
        order, events = await _state(sessions, order_id)
        assert (order.status, order.cancel_reason) == ("CANCELLED", "customer_cancelled")
        assert events == ["order.created", "order.cancelled"]
        await _deliver(settings, sessions, order_id, AUTHORIZED)
        assert (await _state(sessions, order_id))[0].status == "CANCELLED"

    confirmed = await _place(settings, sessions)
    await _deliver(settings, sessions, confirmed, AUTHORIZED)
    with pytest.raises(ConflictError):
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=ALICE, order_id=confirmed
        )
    bob = Identity(subject="bob", roles=frozenset({Role.CUSTOMER}))
    other = await _place(settings, sessions)
    with pytest.raises(NotFoundError):
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=bob, order_id=other
        )


async def test_overdue_orders_are_cancelled_and_only_those(env):
    settings, sessions = env
    fresh = await _place(settings, sessions)
    short = settings.model_copy(update={"saga_deadline_seconds": 0.001})
    stale = await _place(short, sessions)
    done = await _place(short, sessions)
    await _deliver(settings, sessions, done, AUTHORIZED)
    await asyncio.sleep(0.01)  # let the 1 ms deadline pass; the assertion below needs no timing
    assert await service.cancel_overdue(sessions=sessions, settings=settings) == 1
    assert (await _state(sessions, stale))[0].cancel_reason == "deadline_exceeded"
    assert (await _state(sessions, fresh))[0].status == "PENDING"
    assert (await _state(sessions, done))[0].status == "CONFIRMED"
    assert await service.cancel_overdue(sessions=sessions, settings=settings) == 0


async def test_reply_for_an_unknown_order_changes_nothing(env):
    settings, sessions = env
    await _deliver(settings, sessions, uuid.uuid4(), AUTHORIZED)
    async with transaction(sessions) as session:
        assert (await session.execute(select(outbox))).first() is None
