"""The order steps of the saga and the state machine they drive.

The steps answer inventory's and payment's replies; each runs in the consumer's transaction
and locks the order's row first. Replies for an order that is already terminal change
nothing: its compensation was set off by the order.cancelled event (a late
payment.authorized is voided by payment on that event).

Every transition is one statement that changes the order under its row lock, only while it
is PENDING, records history and writes its event. The lock is held to the end of the
transaction, so the events of one order enter the outbox in the order its transitions
committed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from mercato_shared.outbox import outbox_row
from mercato_shared.settings import ServiceSettings
from order_service import repository
from order_service.models import OrderStatus
from order_service.repository import Advanced

log = logging.getLogger(__name__)

REJECTION_REASONS = {
    RejectReason.UNKNOWN_SKU: CancelReason.UNKNOWN_SKU,
    RejectReason.OUT_OF_STOCK: CancelReason.OUT_OF_STOCK,
}
PAYMENT_REASONS = {
    PaymentFailure.DECLINED: CancelReason.PAYMENT_DECLINED,
    PaymentFailure.PROVIDER_UNAVAILABLE: CancelReason.PAYMENT_UNAVAILABLE,
}


def _count_outcome(session: AsyncSession, advanced: Advanced, status: str, reason: str) -> None:
    # Counted at commit: a transaction that rolls back (and is retried) is no outcome.
    seconds = (datetime.now(UTC) - advanced.created_at).total_seconds()

    def record() -> None:
        SAGA_OUTCOMES.labels(status, reason).inc()
        SAGA_DURATION.labels(status).observe(seconds)

    after_commit(session, record)


async def note(session: AsyncSession, order_id: uuid.UUID, step: str, **changes: Any) -> bool:
    """Record a step of a pending order without changing its status; False if not pending."""
    advanced = await repository.advance(
        session, order_id, status=OrderStatus.PENDING, step=step, **changes
    )
    return advanced is not None


async def confirm(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    amount: int,
    currency: str,
    settings: ServiceSettings,
) -> bool:
    """PENDING → CONFIRMED: inventory commits the stock, payment captures."""
    # The customer and address are the order's: the statement fills them in (repository).
    event = OrderConfirmed(customer_id="", amount=amount, currency=currency)
    status = OrderStatus.CONFIRMED
    advanced = await repository.advance(
        session,
        order_id,
        status=status,
        step="confirmed",
        amount=amount,
        currency=currency,
        event=_outbox_row(event, order_id, settings),
    )
    if advanced is None:
        return False
    _count_outcome(session, advanced, status.value, "")
    return True


async def cancel(
    session: AsyncSession, order_id: uuid.UUID, *, reason: CancelReason, settings: ServiceSettings
) -> bool:
    """PENDING → CANCELLED: inventory releases, payment voids or refunds; False if not pending."""
    event = OrderCancelled(customer_id="", reason=reason)
    status = OrderStatus.CANCELLED
    advanced = await repository.advance(
        session,
        order_id,
        status=status,
        step="cancelled",
        reason=reason.value,
        event=_outbox_row(event, order_id, settings),
    )
    if advanced is None:
        return False
    _count_outcome(session, advanced, status.value, reason.value)
    return True


def _outbox_row(
    event: OrderConfirmed | OrderCancelled, order_id: uuid.UUID, settings: ServiceSettings
) -> dict[str, Any]:
    return outbox_row(event, order_id=order_id, topic=settings.topic(event.topic))[1]


async def _not_pending(session: AsyncSession, order_id: uuid.UUID, event: str) -> None:
    """Log why a reply changed nothing: the order is unknown or already final."""
    status = await repository.order_status(session, order_id)
    if status is None:
        # Our own outbox wrote order.created in the order's transaction: a reply about an
        # unknown order is another deployment's, or a bug; it is recorded and dropped.
        log.error("%s for unknown order", event, extra={"order_id": str(order_id)})
    else:
        log.info("%s after %s ignored", event, status, extra={"order_id": str(order_id)})


@dataclass(frozen=True)
class OrderSaga:
    """The order's steps, one per reply it consumes, bound to the process's settings."""

    settings: ServiceSettings

    async def on_inventory_reserved(self, session: AsyncSession, envelope: Envelope) -> None:
        """Record the reserved amount; the order waits for payment's answer."""
        reserved = payload_as(envelope, InventoryReserved)
        changes = {"amount": reserved.amount, "currency": reserved.currency}
        if not await note(session, envelope.order_id, "reserved", **changes):
            await _not_pending(session, envelope.order_id, envelope.type)

    async def on_inventory_rejected(self, session: AsyncSession, envelope: Envelope) -> None:
        """Cancel the order: a SKU is unknown or short."""
        rejected = payload_as(envelope, InventoryRejected)
        await self._cancel(session, envelope, REJECTION_REASONS[rejected.reason])

    async def on_payment_authorized(self, session: AsyncSession, envelope: Envelope) -> None:
        """Confirm the order for the authorized amount."""
        authorized = payload_as(envelope, PaymentAuthorized)
        confirmed = await confirm(
            session,
            envelope.order_id,
            amount=authorized.amount,
            currency=authorized.currency,
            settings=self.settings,
        )
        if not confirmed:
            await _not_pending(session, envelope.order_id, envelope.type)

    async def on_payment_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        """Cancel the order: the payment was declined or could not be authorized."""
        failed = payload_as(envelope, PaymentFailed)
        await self._cancel(session, envelope, PAYMENT_REASONS[failed.reason])

    async def _cancel(
        self, session: AsyncSession, envelope: Envelope, reason: CancelReason
    ) -> None:
        if not await cancel(session, envelope.order_id, reason=reason, settings=self.settings):
            await _not_pending(session, envelope.order_id, envelope.type)
