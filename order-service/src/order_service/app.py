"""The order-api application."""

from fastapi import FastAPI

from mercato_shared.api import create_service_app
from order_service.api.orders import router as orders_router
from order_service.settings import OrderSettings


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    """Build the order API; settings come from ORDER_* variables unless given."""
    return create_service_app(
        settings or OrderSettings(), title="Mercato order service", routers=[orders_router]
    )
