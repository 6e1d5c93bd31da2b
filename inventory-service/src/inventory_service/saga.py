"""The inventory steps of the saga: reserve on order.created, release on order.cancelled,
commit on order.confirmed.

Each runs inside the consumer's inbox transaction. It first locks the order's row in
order_outcomes (created if need be), then the products concerned in SKU order: two events of
one order never interleave, and steps of different orders never deadlock.

Events of one order are ordered within the orders topic, yet order.created can still come
after order.cancelled: an order.created that failed and is replayed from the dead-letter
topic after the deadline sweep cancelled its order, for example. The cancellation is then
remembered, and the late order.created reserves nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from inventory_service import repository
from inventory_service.models import OrderState, ReservationStatus
from inventory_service.repository import Stock
from inventory_service.service import CatalogueError
from mercato_shared.events import (
    Envelope,
    InventoryRejected,
    InventoryReserved,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderLine,
    PricedLine,
    RejectReason,
    payload_as,
)
from mercato_shared.outbox import add_event, outbox_row
from mercato_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class MalformedOrderError(ValueError):
    """An order.created that no reservation can answer (it has no lines)."""


def _quantities(lines: Sequence[OrderLine]) -> dict[str, int]:
    """Quantity per SKU in the order of first appearance; a repeated SKU adds up."""
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    return wanted


def _shortfall(wanted: dict[str, int], products: dict[str, Stock]) -> InventoryRejected | None:
    """Why the order cannot be reserved in full, if it cannot."""
    unknown = sorted(sku for sku in wanted if sku not in products)
    if unknown:
        return InventoryRejected(reason=RejectReason.UNKNOWN_SKU, skus=unknown)
    short = sorted(sku for sku, quantity in wanted.items() if products[sku].available < quantity)
    if short:
        return InventoryRejected(reason=RejectReason.OUT_OF_STOCK, skus=short)
    return None


async def reserve(
    session: AsyncSession, order_id: uuid.UUID, order: OrderCreated, *, settings: ServiceSettings
) -> None:
    """Reserve every line of a new order or none, and say which in the outbox."""
    wanted = _quantities(order.lines)
    # RESERVED is provisional: it is corrected below within this transaction if need be.
    previous, products = await repository.claim_with_stock(
        session, order_id, wanted, state=OrderState.RESERVED
    )
    if previous is not None:
        # Cancelled before it arrived, or a second order.created (a replay under a new id).
        log.info("order.created ignored: order is %s", previous, extra={"order_id": str(order_id)})
        return
    if not wanted:
        raise MalformedOrderError(f"order {order_id} has no lines")
    rejection = _shortfall(wanted, products)
    if rejection is not None:
        await repository.set_order_state(session, order_id, OrderState.REJECTED)
        await add_event(
            session, rejection, order_id=order_id, topic=settings.topic(rejection.topic)
        )
        log.info(
            "order rejected: %s %s",
            rejection.reason,
            rejection.skus,
            extra={"order_id": str(order_id)},
        )
        return
    currencies = {products[sku].currency for sku in wanted}
    if len(currencies) != 1:
        # seed_catalogue keeps one currency per catalogue; anything else is a broken database.
        raise CatalogueError(f"order {order_id} spans currencies {sorted(currencies)}")
    lines = [
        PricedLine(sku=sku, quantity=quantity, unit_price=products[sku].unit_price)
        for sku, quantity in wanted.items()
    ]
    reserved = InventoryReserved(
        customer_id=order.customer_id,
        lines=lines,
        amount=sum(line.quantity * line.unit_price for line in lines),
        currency=currencies.pop(),
    )
    _, event = outbox_row(reserved, order_id=order_id, topic=settings.topic(reserved.topic))
    await repository.reserve_lines(
        session,
        order_id,
        [(line.sku, line.quantity, line.unit_price) for line in lines],
        event=event,
    )


async def release(session: AsyncSession, order_id: uuid.UUID) -> None:
    """Give a cancelled order's stock back, or remember the cancellation if it came first."""
    context = {"order_id": str(order_id)}
    previous = await repository.claim_order(session, order_id, state=OrderState.CANCELLED)
    if previous is None:
        log.info("order.cancelled before order.created: it will never be reserved", extra=context)
    elif previous is OrderState.CONFIRMED:
        # Confirmation is terminal in the order service; this is a bug upstream, not ours to fix.
        log.error("order.cancelled for a confirmed order: stock stays committed", extra=context)
    elif previous is not OrderState.CANCELLED:
        released = await repository.settle(
            session, order_id, to=ReservationStatus.RELEASED, state=OrderState.CANCELLED
        )
        log.info("order released %d reservations", released, extra=context)


async def commit(session: AsyncSession, order_id: uuid.UUID) -> None:
    """Turn a confirmed order's reservations into sold stock."""
    context = {"order_id": str(order_id)}
    state = await repository.lock_order(session, order_id)
    if state is OrderState.RESERVED:
        committed = await repository.settle(
            session, order_id, to=ReservationStatus.COMMITTED, state=OrderState.CONFIRMED
        )
        log.info("order committed %d reservations", committed, extra=context)
    elif state is not OrderState.CONFIRMED:
        # Confirmation needs inventory.reserved first; anything else is a bug upstream.
        log.error("order.confirmed for an order that is %s here", state or "unknown", extra=context)


@dataclass(frozen=True)
class InventorySaga:
    """Inventory's steps, one per order event it consumes, bound to the process's settings."""

    settings: ServiceSettings

    async def lock_stock(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        """Before a batch's steps: every product they will touch, locked in SKU order.

        Every order draws on the same products, so the batches of different partitions (and
        workers) contend for their rows; taken one step at a time they deadlock.
        """
        skus: set[str] = set()
        settled: list[uuid.UUID] = []
        for envelope in envelopes:
            if envelope.type == OrderCreated.event_type:
                skus.update(line.sku for line in payload_as(envelope, OrderCreated).lines)
            else:
                settled.append(envelope.order_id)
        await repository.lock_stock(session, skus, settled)

    async def on_order_created(self, session: AsyncSession, envelope: Envelope) -> None:
        """Reserve the new order's lines, all or none."""
        order = payload_as(envelope, OrderCreated)
        await reserve(session, envelope.order_id, order, settings=self.settings)

    async def on_order_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        """Release the cancelled order's stock."""
        payload_as(envelope, OrderCancelled)  # validates the payload; its fields are not needed
        await release(session, envelope.order_id)

    async def on_order_confirmed(self, session: AsyncSession, envelope: Envelope) -> None:
        """Commit the confirmed order's stock."""
        payload_as(envelope, OrderConfirmed)
        await commit(session, envelope.order_id)
