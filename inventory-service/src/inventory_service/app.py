"""The inventory-api application."""

from fastapi import FastAPI

from inventory_service.api import admin, products
from inventory_service.settings import InventorySettings
from mercato_shared.api import create_service_app


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    """Build the inventory API; settings come from INVENTORY_* variables unless given."""
    return create_service_app(
        settings or InventorySettings(),
        title="Mercato inventory service",
        routers=[products.router, admin.router],
    )
