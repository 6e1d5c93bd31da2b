"""Business rules of orders: one function, one transaction."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.events import OrderCreated
from mercato_shared.events import OrderLine as EventLine
from mercato_shared.identity import Identity
from mercato_shared.outbox import add_event
from mercato_shared.problems import NotFoundError
from mercato_shared.settings import ServiceSettings
from order_service import repository
from order_service.models import Order, OrderLine, OrderStatus, outbox
from order_service.schemas import OrderCreate


async def place_order(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: ServiceSettings,
    identity: Identity,
    request: OrderCreate,
) -> Order:
    """Store a PENDING order and its order.created event in one transaction."""
    order_id = uuid.uuid4()
    order = Order(
        id=order_id,
        customer_id=identity.subject,
        status=OrderStatus.PENDING,
        lines=[
            OrderLine(line_no=number, sku=line.sku, quantity=line.quantity)
            for number, line in enumerate(request.lines, start=1)
        ],
    )
    event = OrderCreated(
        customer_id=identity.subject,
        lines=[EventLine(sku=line.sku, quantity=line.quantity) for line in request.lines],
    )
    async with transaction(sessions) as session:
        await repository.add_order(session, order)
        await add_event(
            session, outbox, event, order_id=order_id, topic=settings.topic(OrderCreated.topic)
        )
    return order


async def get_order(
    *, sessions: async_sessionmaker[AsyncSession], identity: Identity, order_id: uuid.UUID
) -> Order:
    """The order if the caller may see it; another customer's order is simply not found."""
    async with transaction(sessions) as session:
        order = await repository.get_order(session, order_id)
    if order is None or not identity.may_read(order.customer_id):
        raise NotFoundError(f"order {order_id} not found")
    return order
