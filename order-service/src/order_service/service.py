"""Business rules of orders: one function, one transaction."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.events import CancelReason, OrderCreated
from mercato_shared.events import OrderLine as EventLine
from mercato_shared.identity import Identity
from mercato_shared.outbox import outbox_row
from mercato_shared.problems import ConflictError, ProblemError
from order_service import repository, saga
from order_service.models import Order, OrderStatus
from order_service.schemas import HistoryEntry, OrderCreate, OrderLineRead, OrderPage, OrderRead
from order_service.settings import OrderSettings


class IdempotencyMismatchError(ProblemError):
    status, slug, title = 422, "idempotency-key-reused", "Unprocessable Content"


async def place_order(
    *,
    autocommit: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: OrderSettings,
    identity: Identity,
    request: OrderCreate,
    idempotency_key: str | None,
) -> tuple[OrderRead, bool]:
    """Store a PENDING order and its order.created event; returns (order, replayed).

    With an Idempotency-Key, the same key and body give back the first order; the same key
    with another body is a 422; the same key while its first request is still being
    processed is a 409 (the client should retry later).
    """
    order_id = uuid.uuid4()
    deadline_at = datetime.now(UTC) + timedelta(seconds=settings.saga_deadline_seconds)
    lines = [(line.sku, line.quantity) for line in request.lines]
    event = OrderCreated(
        customer_id=identity.subject,
        email=request.email,
        lines=[EventLine(sku=sku, quantity=quantity) for sku, quantity in lines],
    )
    _, row = outbox_row(event, order_id=order_id, topic=settings.topic(OrderCreated.topic))
    request_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    key = None if idempotency_key is None else (idempotency_key, request_hash)
    order = {
        "id": order_id,
        "customer_id": identity.subject,
        "email": request.email,
        "deadline_at": deadline_at,
    }
    # Twice at most: a request that inserted the same key a moment ago, after this
    # statement's snapshot was taken, is seen by the second one.
    for _ in range(2):
        async with autocommit.connect() as conn:
            placed = await repository.place_order(
                conn, order=order, lines=lines, event=row, key=key
            )
        if not placed.held:
            raise ConflictError("a request with this Idempotency-Key is in progress")
        if placed.written is not None:
            created_at, updated_at, entered_at = placed.written
            return (
                _new_order(
                    order, lines, created_at=created_at, updated_at=updated_at, at=entered_at
                ),
                False,
            )
        if placed.known is not None:
            known_hash, known_order = placed.known
            if known_hash != request_hash:
                raise IdempotencyMismatchError(
                    "this Idempotency-Key was used with a different request"
                )
            async with transaction(sessions) as session:
                first = await repository.get_order(session, known_order)
            if first is not None:
                return OrderRead.model_validate(first), True
    raise ConflictError("a request with this Idempotency-Key is in progress")


def _new_order(
    order: dict[str, Any],
    lines: list[tuple[str, int]],
    *,
    created_at: datetime,
    updated_at: datetime,
    at: datetime,
) -> OrderRead:
    """The answer for an order just written: all of it is known without reading it back."""
    status = OrderStatus.PENDING.value
    return OrderRead(
        id=order["id"],
        customer_id=order["customer_id"],
        status=status,
        cancel_reason=None,
        amount=None,
        currency=None,
        lines=[OrderLineRead(sku=sku, quantity=quantity) for sku, quantity in lines],
        history=[HistoryEntry(status=status, step="created", reason=None, at=at)],
        deadline_at=order["deadline_at"],
        created_at=created_at,
        updated_at=updated_at,
    )


async def get_order(
    *, sessions: async_sessionmaker[AsyncSession], identity: Identity, order_id: uuid.UUID
) -> Order:
    """The order if the caller may see it; another customer's order is simply not found."""
    async with transaction(sessions) as session:
        order = await repository.get_order(session, order_id)
    return identity.readable(order, missing=f"order {order_id} not found")


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
        order = identity.readable(
            await repository.get_order(session, order_id, for_update=True),
            missing=f"order {order_id} not found",
        )
        if order.terminal:
            raise ConflictError(
                f"order {order_id} is already {order.status}", order_status=order.status
            )
        await saga.cancel(
            session, order.id, reason=CancelReason.CUSTOMER_CANCELLED, settings=settings
        )
        # The transition changed the row and its history in SQL: the answer reads both back.
        await session.refresh(order)
    return order


async def cancel_overdue(
    *, sessions: async_sessionmaker[AsyncSession], settings: OrderSettings, batch: int = 100
) -> int:
    """Cancel pending orders past their deadline; returns how many."""
    async with transaction(sessions) as session:
        overdue = await repository.overdue_orders(session, now=datetime.now(UTC), limit=batch)
        for order in overdue:
            await saga.cancel(
                session, order.id, reason=CancelReason.DEADLINE_EXCEEDED, settings=settings
            )
    return len(overdue)


async def purge_idempotency_keys(
    *, sessions: async_sessionmaker[AsyncSession], settings: OrderSettings
) -> int:
    """Forget Idempotency-Keys older than the retention window."""
    cutoff = datetime.now(UTC) - timedelta(hours=settings.idempotency_retention_hours)
    async with transaction(sessions) as session:
        return await repository.purge_keys(session, older_than=cutoff)
