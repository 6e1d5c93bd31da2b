"""The notification worker's map from the events it consumes to the saga's steps (saga.py)."""

from mercato_shared.consumer import Handler
from mercato_shared.events import OrderCancelled, OrderConfirmed
from notification_service.mailer import Mailer, SmtpMailer
from notification_service.saga import NotificationSaga
from notification_service.settings import NotificationSettings


def build_handlers(
    settings: NotificationSettings, mailer: Mailer | None = None
) -> dict[str, Handler]:
    """The saga's steps, sending through ``mailer`` (SMTP per the settings by default)."""
    saga = NotificationSaga(settings=settings, mailer=mailer or SmtpMailer(settings))
    return {
        OrderConfirmed.event_type: saga.on_order_confirmed,
        OrderCancelled.event_type: saga.on_order_cancelled,
    }
