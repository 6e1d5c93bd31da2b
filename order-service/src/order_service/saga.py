"""The order state machine: every transition records history and writes its event.

Callers hold the order's row lock (repository.get_order(..., for_update=True)), so the
events of one order enter the outbox in the order its transitions committed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.db import after_commit
from mercato_shared.events import CancelReason, OrderCancelled, OrderConfirmed
from mercato_shared.metrics import SAGA_DURATION, SAGA_OUTCOMES
from mercato_shared.outbox import add_event
from mercato_shared.settings import ServiceSettings
from order_service import repository
from order_service.models import Order, OrderHistory, OrderStatus, outbox


def _count_outcome(session: AsyncSession, order: Order) -> None:
    # Counted at commit: a transaction that rolls back (and is retried) is no outcome.
    status, reason = order.status, order.cancel_reason or ""
    seconds = (datetime.now(UTC) - order.created_at).total_seconds()

    def record() -> None:
        SAGA_OUTCOMES.labels(status, reason).inc()
        SAGA_DURATION.labels(status).observe(seconds)

    after_commit(session, record)


async def note(session: AsyncSession, order: Order, step: str, reason: str | None = None) -> None:
    """Append a history entry without changing the status."""
    order.updated_at = datetime.now(UTC)
    await repository.add(
        session, OrderHistory(order_id=order.id, status=order.status, step=step, reason=reason)
    )


async def confirm(
    session: AsyncSession, order: Order, *, amount: int, currency: str, settings: ServiceSettings
) -> None:
    """PENDING → CONFIRMED: inventory commits the stock, payment captures."""
    order.status, order.amount, order.currency = OrderStatus.CONFIRMED, amount, currency
    await note(session, order, "confirmed")
    _count_outcome(session, order)
    event = OrderConfirmed(
        customer_id=order.customer_id, email=order.email, amount=amount, currency=currency
    )
    await add_event(
        session, outbox, event, order_id=order.id, topic=settings.topic(OrderConfirmed.topic)
    )


async def cancel(
    session: AsyncSession, order: Order, *, reason: CancelReason, settings: ServiceSettings
) -> None:
    """PENDING → CANCELLED: inventory releases, payment voids or refunds."""
    order.status, order.cancel_reason = OrderStatus.CANCELLED, reason.value
    await note(session, order, "cancelled", reason.value)
    _count_outcome(session, order)
    event = OrderCancelled(customer_id=order.customer_id, email=order.email, reason=reason)
    await add_event(
        session, outbox, event, order_id=order.id, topic=settings.topic(OrderCancelled.topic)
    )
