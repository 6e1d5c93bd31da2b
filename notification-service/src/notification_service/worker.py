"""The notification-worker process: mails order outcomes (it emits no events: no relay)."""

from mercato_shared.worker import WorkerSpec
from notification_service.handlers import build_handlers
from notification_service.mailer import SmtpMailer
from notification_service.models import inbox
from notification_service.settings import NotificationSettings


def build_spec(settings: NotificationSettings | None = None) -> WorkerSpec:
    settings = settings or NotificationSettings()
    # The process's SMTP connections, opened lazily inside the worker's event loop.
    mailer = SmtpMailer(settings)
    return WorkerSpec(
        settings=settings,
        inbox=inbox,
        topics=("orders",),
        handlers=build_handlers(settings, mailer),
        closers=(mailer.close,),
    )
