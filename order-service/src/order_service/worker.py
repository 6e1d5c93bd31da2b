"""The order-worker process: relays the outbox and consumes the saga's replies."""

from mercato_shared.worker import WorkerSpec
from order_service.handlers import HANDLERS
from order_service.models import inbox, outbox
from order_service.settings import OrderSettings


def build_spec(settings: OrderSettings | None = None) -> WorkerSpec:
    return WorkerSpec(
        settings=settings or OrderSettings(),
        outbox=outbox,
        inbox=inbox,
        topics=("inventory", "payments"),
        handlers=HANDLERS,
    )
