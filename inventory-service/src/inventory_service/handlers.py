"""Handlers of the events the inventory service consumes, by event type."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.consumer import Handler
from mercato_shared.events import Envelope, OrderCreated, payload_as

log = logging.getLogger(__name__)


async def on_order_created(session: AsyncSession, envelope: Envelope) -> None:
    """Accept a new order; its inbox row (same transaction) is the durable record of receipt.

    Reservation of the lines is the saga's next step and lands with it.
    """
    payload = payload_as(envelope, OrderCreated)
    log.info(
        "order received",
        extra={"order_id": str(envelope.order_id), "lines": len(payload.lines)},
    )


HANDLERS: dict[str, Handler] = {OrderCreated.event_type: on_order_created}
