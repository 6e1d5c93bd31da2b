"""Handlers of the saga's replies: inventory.* and payment.* decide an order's outcome.

Each runs in the consumer's inbox transaction and locks the order's row first. Replies for
an order that is already terminal change nothing: its compensation was set off by the
order.cancelled event (a late payment.authorized is voided by payment on that event).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.consumer import Handler
from mercato_shared.events import (
    CancelReason,
    Envelope,
    InventoryRejected,
    InventoryReserved,
    PaymentAuthorized,
    PaymentFailed,
    PaymentFailure,
    RejectReason,
    payload_as,
)
from mercato_shared.settings import ServiceSettings
from order_service import repository, saga
from order_service.models import Order

log = logging.getLogger(__name__)

REJECTION_REASONS = {
    RejectReason.UNKNOWN_SKU: CancelReason.UNKNOWN_SKU,
    RejectReason.OUT_OF_STOCK: CancelReason.OUT_OF_STOCK,
}
PAYMENT_REASONS = {
    PaymentFailure.DECLINED: CancelReason.PAYMENT_DECLINED,
    PaymentFailure.PROVIDER_UNAVAILABLE: CancelReason.PAYMENT_UNAVAILABLE,
}


async def _pending(session: AsyncSession, order_id: uuid.UUID, event: str) -> Order | None:
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


def build_handlers(settings: ServiceSettings) -> dict[str, Handler]:
    """The order worker's handlers, bound to its settings (topic names)."""

    async def on_reserved(session: AsyncSession, envelope: Envelope) -> None:
        reserved = payload_as(envelope, InventoryReserved)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            order.amount, order.currency = reserved.amount, reserved.currency
            await saga.note(session, order, "reserved")

    async def on_rejected(session: AsyncSession, envelope: Envelope) -> None:
        rejected = payload_as(envelope, InventoryRejected)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            reason = REJECTION_REASONS[rejected.reason]
            await saga.cancel(session, order, reason=reason, settings=settings)

    async def on_authorized(session: AsyncSession, envelope: Envelope) -> None:
        authorized = payload_as(envelope, PaymentAuthorized)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            await saga.confirm(
                session,
                order,
                amount=authorized.amount,
                currency=authorized.currency,
                settings=settings,
            )

    async def on_payment_failed(session: AsyncSession, envelope: Envelope) -> None:
        failed = payload_as(envelope, PaymentFailed)
        order = await _pending(session, envelope.order_id, envelope.type)
        if order is not None:
            reason = PAYMENT_REASONS[failed.reason]
            await saga.cancel(session, order, reason=reason, settings=settings)

    return {
        InventoryReserved.event_type: on_reserved,
        InventoryRejected.event_type: on_rejected,
        PaymentAuthorized.event_type: on_authorized,
        PaymentFailed.event_type: on_payment_failed,
    }
