"""The order steps of the saga and the state machine they drive.

The steps answer inventory's and payment's replies; each runs in the consumer's transaction
and locks the order's row first. Replies for an order that is already terminal change
nothing: its compensation was set off by the order.cancelled event (a late
payment.authorized is voided by payment on that event).

Every transition records history and writes its event. Callers hold the order's row lock
(repository.get_order(..., for_update=True)), so the events of one order enter the outbox in
the order its transitions committed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.db import after_commit
from mercato_shared.events import (
    CancelReason,
    Envelope,
    InventoryRejected,
    InventoryReserved,
    OrderCancelled,
    OrderConfirmed,
    PaymentAuthorized,
    PaymentFailed,
    PaymentFailure,
    RejectReason,
    payload_as,
)
from mercato_shared.metrics import SAGA_DURATION, SAGA_OUTCOMES
from mercato_shared.outbox import add_event
from mercato_shared.settings import ServiceSettings
from order_service import repository
from order_service.models import Order, OrderHistory, OrderStatus, outbox

log = logging.getLogger(__name__)

REJECTION_REASONS = {
    RejectReason.UNKNOWN_SKU: CancelReason.UNKNOWN_SKU,
    RejectReason.OUT_OF_STOCK: CancelReason.OUT_OF_STOCK,
}
PAYMENT_REASONS = {
    PaymentFailure.DECLINED: CancelReason.PAYMENT_DECLINED,
    PaymentFailure.PROVIDER_UNAVAILABLE: CancelReason.PAYMENT_UNAVAILABLE,
}


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


async def _pending(session: AsyncSession, order_id: uuid.UUID, event: str) -> Order | None:
    """The order's locked row if it still awaits replies; None (logged) if not."""
    order = await repository.lock_order(session, order_id)
    if order is None:
        # Our own outbox wrote order.created in the order's transaction: a reply about an
        # unknown order is another deployment's, or a bug; it is recorded and dropped.
        log.error("%s for unknown order", event, extra={"order_id": str(order_id)})
        return None
    if order.terminal:
        log.info("%s after %s ignored", event, order.status, extra={"order_id": str(order_id)})
        return None
    return order


@dataclass(frozen=True)
class OrderSaga:
    """The order's steps, one per reply it consumes, bound to the process's settings."""

    settings: ServiceSettings

    async def on_inventory_reserved(self, session: AsyncSession, envelope: Envelope) -> None:
        """Record the reserved amount; the order waits for payment's answer."""
        reserved = payload_as(envelope, InventoryReserved)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            order.amount, order.currency = reserved.amount, reserved.currency
            await note(session, order, "reserved")

    async def on_inventory_rejected(self, session: AsyncSession, envelope: Envelope) -> None:
        """Cancel the order: a SKU is unknown or short."""
        rejected = payload_as(envelope, InventoryRejected)
        await self._cancel(session, envelope, REJECTION_REASONS[rejected.reason])

    async def on_payment_authorized(self, session: AsyncSession, envelope: Envelope) -> None:
        """Confirm the order for the authorized amount."""
        authorized = payload_as(envelope, PaymentAuthorized)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            await confirm(
                session,
                order,
                amount=authorized.amount,
                currency=authorized.currency,
                settings=self.settings,
            )

    async def on_payment_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        """Cancel the order: the payment was declined or could not be authorized."""
        failed = payload_as(envelope, PaymentFailed)
        await self._cancel(session, envelope, PAYMENT_REASONS[failed.reason])

    async def _cancel(
        self, session: AsyncSession, envelope: Envelope, reason: CancelReason
    ) -> None:
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            await cancel(session, order, reason=reason, settings=self.settings)
