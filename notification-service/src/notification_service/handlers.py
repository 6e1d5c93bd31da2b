"""The notification worker's map from the events it consumes to the saga's steps (saga.py)."""

from mercato_shared.consumer import Handler
from mercato_shared.events import OrderCancelled, OrderConfirmed
from notification_service.mailer import Mailer
from notification_service.saga import NotificationSaga
from notification_service.settings import NotificationSettings


def build_handlers(settings: NotificationSettings, mailer: Mailer) -> dict[str, Handler]:
    """The saga's steps, bound to this process's settings and mailer."""
    saga = NotificationSaga(settings=settings, mailer=mailer)
    return {
        OrderConfirmed.event_type: saga.on_order_confirmed,
        OrderCancelled.event_type: saga.on_order_cancelled,
    }
