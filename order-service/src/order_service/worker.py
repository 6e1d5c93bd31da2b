"""The order-worker process: relays the outbox, consumes the saga's replies, sweeps deadlines."""

import functools

from mercato_shared.worker import WorkerSpec
from order_service import service
from order_service.handlers import build_handlers
from order_service.models import inbox, outbox
from order_service.settings import OrderSettings

PURGE_INTERVAL_SECONDS = 3600.0


def build_spec(settings: OrderSettings | None = None) -> WorkerSpec:
    settings = settings or OrderSettings()
    return WorkerSpec(
        settings=settings,
        outbox=outbox,
        inbox=inbox,
        topics=("inventory", "payments"),
        handlers=build_handlers(settings),
        jobs=(
            (
                functools.partial(service.cancel_overdue, settings=settings),
                settings.deadline_sweep_interval_seconds,
            ),
            (
                functools.partial(service.purge_idempotency_keys, settings=settings),
                PURGE_INTERVAL_SECONDS,
            ),
        ),
    )
