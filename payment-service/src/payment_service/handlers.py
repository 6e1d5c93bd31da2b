"""Handlers of the events the payment service consumes, by event type."""

from mercato_shared.consumer import Handler
from mercato_shared.events import InventoryReserved, OrderCancelled, OrderConfirmed
from payment_service.saga import PaymentSaga
from payment_service.sandbox import SandboxClient
from payment_service.settings import PaymentSettings


def build_handlers(settings: PaymentSettings, sandbox: SandboxClient) -> dict[str, Handler]:
    """The saga's steps, bound to this process's settings and processor client."""
    saga = PaymentSaga(settings=settings, sandbox=sandbox)
    return {
        InventoryReserved.event_type: saga.on_inventory_reserved,
        OrderConfirmed.event_type: saga.on_order_confirmed,
        OrderCancelled.event_type: saga.on_order_cancelled,
    }
