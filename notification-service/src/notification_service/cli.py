"""Console scripts: notification-api, notification-worker, notification-migrate."""

from mercato_shared import api as shared_api
from mercato_shared import migrations
from mercato_shared import worker as shared_worker
from notification_service.app import create_app
from notification_service.settings import NotificationSettings
from notification_service.worker import build_spec


def api() -> None:
    settings = NotificationSettings()
    shared_api.serve(create_app(settings), settings)


def worker() -> None:
    shared_worker.main(build_spec())


def migrate() -> None:
    migrations.migrate_command("notification_service", NotificationSettings())
