"""Helpers of the order tests: placing orders, delivering replies as the consumer does, reading
an order back with the events its outbox holds."""

from __future__ import annotations

from sqlalchemy import select

from mercato_shared.db import transaction
from mercato_shared.events import Envelope, InventoryReserved, PaymentAuthorized, PricedLine
from mercato_shared.identity import Identity, Role
from order_service import service
from order_service.handlers import build_handlers
from order_service.models import Order, outbox
from order_service.schemas import OrderCreate

ALICE = Identity(subject="alice", roles=frozenset({Role.CUSTOMER}))

RESERVED = InventoryReserved(
    customer_id="alice",
    lines=[PricedLine(sku="MUG-BLUE", quantity=2, unit_price=1250)],
    amount=2500,
    currency="EUR",
)
AUTHORIZED = PaymentAuthorized(amount=2500, currency="EUR", authorization_id="auth_1")


async def place(settings, sessions, email=None, *, identity=ALICE, idempotency_key=None):
    """Place an order of two MUG-BLUE through the service; returns its id."""
    request = OrderCreate.model_validate(
        {"lines": [{"sku": "MUG-BLUE", "quantity": 2}], "email": email}
    )
    engine = sessions.kw["bind"]
    order, _ = await service.place_order(
        autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
        sessions=sessions,
        settings=settings,
        identity=identity,
        request=request,
        idempotency_key=idempotency_key,
    )
    return order.id


async def deliver(settings, sessions, order_id, payload):
    """Run the reply's step in a transaction of its own."""
    handlers = build_handlers(settings)
    envelope = Envelope.wrap(payload, order_id=order_id)
    async with transaction(sessions) as session:
        await handlers[envelope.type](session, envelope)


async def state(sessions, order_id):
    """(order, its outbox event types in publish order)."""
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
