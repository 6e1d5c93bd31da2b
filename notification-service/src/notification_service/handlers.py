"""Handlers of the events the notification service consumes, by event type.

Only the terminal events of an order are mailed; order.created is not handled (the consumer
skips types without a handler).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.consumer import Handler
from mercato_shared.events import Envelope, OrderCancelled, OrderConfirmed, payload_as
from notification_service import service, templates
from notification_service.mailer import Mailer, SmtpMailer
from notification_service.settings import NotificationSettings


def build_handlers(
    settings: NotificationSettings, mailer: Mailer | None = None
) -> dict[str, Handler]:
    """The worker's handlers, sending through ``mailer`` (SMTP per the settings by default)."""
    sender = mailer or SmtpMailer(settings)

    async def on_confirmed(session: AsyncSession, envelope: Envelope) -> None:
        event = payload_as(envelope, OrderConfirmed)
        await service.notify_outcome(
            session,
            settings=settings,
            mailer=sender,
            order_id=envelope.order_id,
            customer_id=event.customer_id,
            email=event.email,
            kind=envelope.type,
            text=templates.confirmed(envelope.order_id, event),
        )

    async def on_cancelled(session: AsyncSession, envelope: Envelope) -> None:
        event = payload_as(envelope, OrderCancelled)
        await service.notify_outcome(
            session,
            settings=settings,
            mailer=sender,
            order_id=envelope.order_id,
            customer_id=event.customer_id,
            email=event.email,
            kind=envelope.type,
            text=templates.cancelled(envelope.order_id, event),
        )

    return {
        OrderConfirmed.event_type: on_confirmed,
        OrderCancelled.event_type: on_cancelled,
    }
