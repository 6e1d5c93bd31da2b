"""The inventory worker's map from the events it consumes to the saga's steps (saga.py)."""

from inventory_service.saga import InventorySaga
from mercato_shared.consumer import BatchLock, Handler
from mercato_shared.events import OrderCancelled, OrderConfirmed, OrderCreated
from mercato_shared.settings import ServiceSettings


def build_handlers(settings: ServiceSettings) -> dict[str, Handler]:
    """The saga's steps, bound to this process's settings (topic names)."""
    saga = InventorySaga(settings=settings)
    return {
        OrderCreated.event_type: saga.on_order_created,
        OrderCancelled.event_type: saga.on_order_cancelled,
        OrderConfirmed.event_type: saga.on_order_confirmed,
    }


def build_batch_lock(settings: ServiceSettings) -> BatchLock:
    """What the worker runs before each batch's steps: the products they share, locked."""
    return InventorySaga(settings=settings).lock_stock
