"""Console scripts: order-api, order-worker, order-migrate."""

from mercato_shared import api as shared_api
from mercato_shared import migrations
from mercato_shared import worker as shared_worker
from order_service.app import create_app
from order_service.settings import OrderSettings
from order_service.worker import build_spec


def api() -> None:
    settings = OrderSettings()
    shared_api.serve(create_app(settings), settings)


def worker() -> None:
    shared_worker.main(build_spec())


def migrate() -> None:
    migrations.migrate_command("order_service", OrderSettings())
