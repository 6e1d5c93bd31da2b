"""Console scripts: payment-api, payment-worker, payment-migrate."""

from mercato_shared import api as shared_api
from mercato_shared import migrations
from mercato_shared import worker as shared_worker
from payment_service.app import create_app
from payment_service.settings import PaymentSettings
from payment_service.worker import build_spec


def api() -> None:
    settings = PaymentSettings()
    shared_api.serve(create_app(settings), settings)


def worker() -> None:
    shared_worker.main(build_spec())


def migrate() -> None:
    migrations.migrate_command("payment_service", PaymentSettings())
