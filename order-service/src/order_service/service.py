"""Business rules of orders: one function, one transaction."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.events import CancelReason, OrderCreated
from mercato_shared.events import OrderLine as EventLine
from mercato_shared.identity import Identity
from mercato_shared.outbox import add_event
from mercato_shared.problems import ConflictError, NotFoundError, ProblemError
from order_service import repository, saga
from order_service.models import IdempotencyKey, Order, OrderHistory, OrderLine, OrderStatus, outbox
from order_service.schemas import OrderCreate, OrderPage, OrderRead
from order_service.settings import OrderSettings


class IdempotencyMismatchError(ProblemError):
    status, slug, title = 422, "idempotency-key-reused", "Unprocessable Content"


async def place_order(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: OrderSettings,
    identity: Identity,
    request: OrderCreate,
    idempotency_key: str | None,
) -> tuple[Order, bool]:
    """Store a PENDING order and its order.created event; returns (order, replayed).

    With an Idempotency-Key, the same key and body give back the first order; the same key
    with another body is a 422; the same key while its first request is still being
    processed is a 409 (the client should retry later).
    """
    request_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    async with transaction(sessions) as session:
        if idempotency_key is not None:
            if not await repository.try_lock_key(session, identity.subject, idempotency_key):
                raise ConflictError("a request with this Idempotency-Key is in progress")
            known = await repository.get_key(session, identity.subject, idempotency_key)
            if known is not None:
                if known.request_hash != request_hash:
                    raise IdempotencyMismatchError(
                        "this Idempotency-Key was used with a different request"
                    )
                order = await repository.get_order(session, known.order_id)
                if order is not None:
                    return order, True
        order = _new_order(settings, identity, request)
        await repository.add(session, order)
        if idempotency_key is not None:
            await repository.add(
                session,
                IdempotencyKey(
                    customer_id=identity.subject,
                    key=idempotency_key,
                    request_hash=request_hash,
                    order_id=order.id,
                ),
            )
        event = OrderCreated(
            customer_id=identity.subject,
            email=request.email,
            lines=[EventLine(sku=line.sku, quantity=line.quantity) for line in request.lines],
        )
        await add_event(
            session, outbox, event, order_id=order.id, topic=settings.topic(OrderCreated.topic)
        )
    return order, False


def _new_order(settings: OrderSettings, identity: Identity, request: OrderCreate) -> Order:
    order_id = uuid.uuid4()
    return Order(
        id=order_id,
        customer_id=identity.subject,
        email=request.email,
        status=OrderStatus.PENDING,
        deadline_at=datetime.now(UTC) + timedelta(seconds=settings.saga_deadline_seconds),
        lines=[
            OrderLine(line_no=number, sku=line.sku, quantity=line.quantity)
            for number, line in enumerate(request.lines, start=1)
        ],
        # Built with the order, its one entry (id and time come back from the insert) is the
        # loaded collection the response shows: no query to read back what was just written.
        history=[OrderHistory(status=OrderStatus.PENDING, step="created")],
    )


async def get_order(
    *, sessions: async_sessionmaker[AsyncSession], identity: Identity, order_id: uuid.UUID
) -> Order:
    """The order if the caller may see it; another customer's order is simply not found."""
    async with transaction(sessions) as session:
        order = await repository.get_order(session, order_id)
    if order is None or not identity.may_read(order.customer_id):
        raise NotFoundError(f"order {order_id} not found")
    return order


async def list_orders(
    *,
    sessions: async_sessionmaker[AsyncSession],
    identity: Identity,
    customer_id: str | None,
    limit: int,
    offset: int,
) -> OrderPage:
    """Customers list their own orders; admins everyone's, or one customer's by filter."""
    owner = customer_id if identity.is_admin else identity.subject
    async with transaction(sessions) as session:
        orders, total = await repository.list_orders(
            session, customer_id=owner, limit=limit, offset=offset
        )
    return OrderPage(
        items=[OrderRead.model_validate(order) for order in orders],
        limit=limit,
        offset=offset,
        total=total,
    )


async def cancel_order(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: OrderSettings,
    identity: Identity,
    order_id: uuid.UUID,
) -> Order:
    """The customer cancels a non-terminal order; compensation follows its event."""
    async with transaction(sessions) as session:
        order = await repository.get_order(session, order_id, for_update=True)
        if order is None or not identity.may_read(order.customer_id):
            raise NotFoundError(f"order {order_id} not found")
        if order.terminal:
            raise ConflictError(
                f"order {order_id} is already {order.status}", order_status=order.status
            )
        await saga.cancel(session, order, reason=CancelReason.CUSTOMER_CANCELLED, settings=settings)
        await session.refresh(order, ["history"])
    return order


async def cancel_overdue(
    *, sessions: async_sessionmaker[AsyncSession], settings: OrderSettings, batch: int = 100
) -> int:
    """Cancel pending orders past their deadline; returns how many."""
    async with transaction(sessions) as session:
        overdue = await repository.overdue_orders(session, now=datetime.now(UTC), limit=batch)
        for order in overdue:
            await saga.cancel(
                session, order, reason=CancelReason.DEADLINE_EXCEEDED, settings=settings
            )
    return len(overdue)


async def purge_idempotency_keys(
    *, sessions: async_sessionmaker[AsyncSession], settings: OrderSettings
) -> int:
    """Forget Idempotency-Keys older than the retention window."""
    cutoff = datetime.now(UTC) - timedelta(hours=settings.idempotency_retention_hours)
    async with transaction(sessions) as session:
        return await repository.purge_keys(session, older_than=cutoff)
