"""The inventory-worker process: consumes order events and relays its outbox."""

from inventory_service.handlers import HANDLERS
from inventory_service.models import inbox, outbox
from inventory_service.settings import InventorySettings
from mercato_shared.worker import WorkerSpec


def build_spec(settings: InventorySettings | None = None) -> WorkerSpec:
    return WorkerSpec(
        settings=settings or InventorySettings(),
        outbox=outbox,
        inbox=inbox,
        topics=("orders",),
        handlers=HANDLERS,
    )
