"""The order state machine: replies from inventory and payment, deadlines, cancellations."""

import asyncio
import uuid

import pytest
from sqlalchemy import select

from mercato_shared.db import transaction
from mercato_shared.events import (
    Envelope,
    InventoryRejected,
    OrderCancelled,
    OrderConfirmed,
    PaymentFailed,
    payload_as,
)
from mercato_shared.identity import Identity, Role
from mercato_shared.problems import ConflictError, NotFoundError
from order_service import service
from order_service.models import outbox
from tests.order_service.support import ALICE, AUTHORIZED, RESERVED, deliver, place, state


async def test_happy_path_reserved_then_authorized_confirms(env):
    settings, sessions = env
    order_id = await place(settings, sessions, email="alice@example.com")
    await deliver(settings, sessions, order_id, RESERVED)
    order, _ = await state(sessions, order_id)
    assert (order.status, order.amount, order.currency) == ("PENDING", 2500, "EUR")
    await deliver(settings, sessions, order_id, AUTHORIZED)
    order, events = await state(sessions, order_id)
    assert order.status == "CONFIRMED"
    assert [h.step for h in order.history] == ["created", "reserved", "confirmed"]
    assert events == ["order.created", "order.confirmed"]


@pytest.mark.parametrize(
    ("reply", "payload"),
    [
        (AUTHORIZED, OrderConfirmed),
        (PaymentFailed(reason="declined"), OrderCancelled),
    ],
)
@pytest.mark.parametrize("email", ["alice@example.com", None])
async def test_a_terminal_event_names_the_orders_customer_and_address(env, reply, payload, email):
    settings, sessions = env
    order_id = await place(settings, sessions, email=email)
    await deliver(settings, sessions, order_id, reply)
    async with transaction(sessions) as session:
        rows = (
            await session.execute(
                select(outbox.c.event_id, outbox.c.event_type, outbox.c.envelope).where(
                    outbox.c.key == str(order_id), outbox.c.event_type == payload.event_type
                )
            )
        ).all()
    assert len(rows) == 1
    envelope = Envelope.model_validate(rows[0].envelope)
    assert (envelope.id, envelope.type, envelope.order_id) == (
        rows[0].event_id,
        payload.event_type,
        order_id,
    )
    event = payload_as(envelope, payload)
    assert (event.customer_id, event.email) == (ALICE.subject, email)


async def test_payment_authorized_before_reserved_still_confirms(env):
    settings, sessions = env
    order_id = await place(settings, sessions)
    await deliver(settings, sessions, order_id, AUTHORIZED)
    await deliver(settings, sessions, order_id, RESERVED)  # late: ignored, order is terminal
    order, events = await state(sessions, order_id)
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
    order_id = await place(settings, sessions)
    await deliver(settings, sessions, order_id, reply)
    await deliver(settings, sessions, order_id, AUTHORIZED)  # too late: changes nothing
    order, events = await state(sessions, order_id)
    assert (order.status, order.cancel_reason) == ("CANCELLED", reason)
    assert events == ["order.created", "order.cancelled"]


async def test_customer_cancels_at_each_stage_and_not_after_the_end(env):
    settings, sessions = env
    for stage in ("pending", "reserved"):
        order_id = await place(settings, sessions)
        if stage == "reserved":
            await deliver(settings, sessions, order_id, RESERVED)
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=ALICE, order_id=order_id
        )
        order, events = await state(sessions, order_id)
        assert (order.status, order.cancel_reason) == ("CANCELLED", "customer_cancelled")
        assert events == ["order.created", "order.cancelled"]
        await deliver(settings, sessions, order_id, AUTHORIZED)
        assert (await state(sessions, order_id))[0].status == "CANCELLED"

    confirmed = await place(settings, sessions)
    await deliver(settings, sessions, confirmed, AUTHORIZED)
    with pytest.raises(ConflictError):
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=ALICE, order_id=confirmed
        )
    bob = Identity(subject="bob", roles=frozenset({Role.CUSTOMER}))
    other = await place(settings, sessions)
    with pytest.raises(NotFoundError):
        await service.cancel_order(
            sessions=sessions, settings=settings, identity=bob, order_id=other
        )


async def test_overdue_orders_are_cancelled_and_only_those(env):
    settings, sessions = env
    fresh = await place(settings, sessions)
    short = settings.model_copy(update={"saga_deadline_seconds": 0.001})
    stale = await place(short, sessions)
    done = await place(short, sessions)
    await deliver(settings, sessions, done, AUTHORIZED)
    await asyncio.sleep(0.01)  # let the 1 ms deadline pass; the assertion below needs no timing
    assert await service.cancel_overdue(sessions=sessions, settings=settings) == 1
    assert (await state(sessions, stale))[0].cancel_reason == "deadline_exceeded"
    assert (await state(sessions, fresh))[0].status == "PENDING"
    assert (await state(sessions, done))[0].status == "CONFIRMED"
    assert await service.cancel_overdue(sessions=sessions, settings=settings) == 0


async def test_reply_for_an_unknown_order_changes_nothing(env):
    settings, sessions = env
    await deliver(settings, sessions, uuid.uuid4(), AUTHORIZED)
    async with transaction(sessions) as session:
        assert (await session.execute(select(outbox))).first() is None
