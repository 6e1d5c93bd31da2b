"""The inventory-worker process: consumes order events and relays its outbox."""

from inventory_service.handlers import build_batch_lock, build_handlers
from inventory_service.models import inbox, outbox
from inventory_service.settings import InventorySettings
from mercato_shared.worker import WorkerSpec


def build_spec(settings: InventorySettings | None = None) -> WorkerSpec:
    settings = settings or InventorySettings()
    return WorkerSpec(
        settings=settings,
        outbox=outbox,
        inbox=inbox,
        topics=("orders",),
        handlers=build_handlers(settings),
        lock_batch=build_batch_lock(settings),
    )
