"""The catalogue's rules, kept by the service's use cases."""

import pytest

from inventory_service.catalogue import demo_products
from inventory_service.service import CatalogueError
from tests.inventory_service.support import product


async def test_the_catalogue_keeps_one_currency(inventory):
    await inventory.seed(demo_products())
    with pytest.raises(CatalogueError):
        await inventory.seed([product("DOLLAR-MUG", 10, currency="USD")])
    await inventory.seed([product("EURO-MUG", 10)])
    assert await inventory.stock("EURO-MUG") == (10, 0, 0)
