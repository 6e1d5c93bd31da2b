"""The notification-worker process: consumes order outcomes, relays its outbox."""

from mercato_shared.worker import WorkerSpec
from notification_service.handlers import HANDLERS
from notification_service.models import inbox, outbox
from notification_service.settings import NotificationSettings


def build_spec(settings: NotificationSettings | None = None) -> WorkerSpec:
    return WorkerSpec(
        settings=settings or NotificationSettings(),
        outbox=outbox,
        inbox=inbox,
        topics=("orders",),
        handlers=HANDLERS,
    )
