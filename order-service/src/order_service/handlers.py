"""The order worker's map from the events it consumes to the saga's steps (saga.py)."""

from mercato_shared.consumer import Handler
from mercato_shared.events import (
    InventoryRejected,
    InventoryReserved,
    PaymentAuthorized,
    PaymentFailed,
)
from mercato_shared.settings import ServiceSettings
from order_service.saga import OrderSaga


def build_handlers(settings: ServiceSettings) -> dict[str, Handler]:
    """The saga's steps, bound to this process's settings (topic names)."""
    saga = OrderSaga(settings=settings)
    return {
        InventoryReserved.event_type: saga.on_inventory_reserved,
        InventoryRejected.event_type: saga.on_inventory_rejected,
        PaymentAuthorized.event_type: saga.on_payment_authorized,
        PaymentFailed.event_type: saga.on_payment_failed,
    }
