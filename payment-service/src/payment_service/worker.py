"""The payment-worker process: consumes reservations and cancellations, relays its outbox."""

from mercato_shared.worker import WorkerSpec
from payment_service.handlers import HANDLERS
from payment_service.models import inbox, outbox
from payment_service.settings import PaymentSettings


def build_spec(settings: PaymentSettings | None = None) -> WorkerSpec:
    return WorkerSpec(
        settings=settings or PaymentSettings(),
        outbox=outbox,
        inbox=inbox,
        topics=("inventory", "orders"),
        handlers=HANDLERS,
    )
