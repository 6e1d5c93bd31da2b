"""Stock under concurrency, the single-currency rule, and the invariant check itself."""

import asyncio
import uuid

import pytest

from inventory_service.catalogue import demo_products
from inventory_service.models import Product, Reservation
from inventory_service.service import CatalogueError
from tests.inventory_service.support import created, product


async def test_racing_orders_never_oversell_a_scarce_sku(inventory):
    await inventory.seed([product("SCARCE", 5), product("PLENTY", 1000)])
    # Half the orders name their SKUs in the opposite order: locking in SKU order is what
    # keeps these transactions from deadlocking on each other.
    orders = [
        created(("SCARCE", 1), ("PLENTY", 1)) if n % 2 else created(("PLENTY", 1), ("SCARCE", 1))
        for n in range(20)
    ]
    await asyncio.gather(*(inventory.handle(order) for order in orders))

    kinds = [kind for kind, _ in await inventory.events()]
    assert kinds.count("inventory.reserved") == 5
    assert kinds.count("inventory.rejected") == 15
    assert await inventory.stock("SCARCE") == (5, 5, 0)
    assert await inventory.stock("PLENTY") == (1000, 5, 0)
    rejected = [p for kind, p in await inventory.events() if kind == "inventory.rejected"]
    assert all(p == {"reason": "out_of_stock", "skus": ["SCARCE"]} for p in rejected)
    assert len(await inventory.reservations()) == 10
    assert await inventory.violations() == []


async def test_the_catalogue_keeps_one_currency(inventory):
    await inventory.seed(demo_products())
    with pytest.raises(CatalogueError):
        await inventory.seed([product("DOLLAR-MUG", 10, currency="USD")])
    await inventory.seed([product("EURO-MUG", 10)])
    assert await inventory.stock("EURO-MUG") == (10, 0, 0)


async def test_check_reports_counts_that_disagree_with_reservations(seeded):
    await seeded.handle(created(("MUG-BLUE", 2)))
    assert await seeded.violations() == []
    await seeded.tamper(Product, "MUG-BLUE", reserved=3)
    await seeded.tamper(Product, "TEE-M", committed=1)
    assert await seeded.violations() == [
        "sku MUG-BLUE: reserved is 3, RESERVED reservations 2",
        "sku TEE-M: committed is 1, COMMITTED reservations 0",
    ]


async def test_check_reports_reservations_that_contradict_their_order(seeded):
    event = created(("MUG-BLUE", 2))
    await seeded.handle(event)
    await seeded.tamper(Reservation, (event.order_id, "MUG-BLUE"), status="RELEASED")
    assert await seeded.violations() == [
        "sku MUG-BLUE: reserved is 2, RESERVED reservations 0",
        f"order {event.order_id}: MUG-BLUE is RELEASED while the order is RESERVED",
    ]


async def test_check_reports_an_order_that_lost_its_reservations(seeded):
    event = created(("MUG-BLUE", 2))
    await seeded.handle(event)
    await seeded.tamper(Product, "MUG-BLUE", reserved=0)
    await seeded.tamper(Reservation, (event.order_id, "MUG-BLUE"), order_id=uuid.UUID(int=0))
    violations = await seeded.violations()
    assert f"order {event.order_id}: RESERVED without reservations" in violations
    assert any("is RESERVED while the order is unknown" in v for v in violations)
