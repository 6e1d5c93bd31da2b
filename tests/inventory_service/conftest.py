"""Fixtures of the inventory tests: settings, a handle on the database, the API client."""

import pytest

from inventory_service.app import create_app
from inventory_service.catalogue import demo_products
from inventory_service.settings import InventorySettings
from tests.apps import client_for
from tests.inventory_service.support import opened


@pytest.fixture
def settings(inventory_db, keys):
    return InventorySettings(
        database_url=inventory_db, identity_public_keys=keys[1], kafka_prefix="p."
    )


@pytest.fixture
async def inventory(settings):
    async with opened(settings) as inventory:
        yield inventory


@pytest.fixture
async def seeded(inventory):
    """The demo catalogue: MUG-BLUE 500 at 12.50, POSTER-LTD 3, SOLD-OUT 0..."""
    await inventory.seed(demo_products())
    return inventory


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client
