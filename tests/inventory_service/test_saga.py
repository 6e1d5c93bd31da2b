"""The saga steps against a real, migrated database, each event in its own transaction."""

import asyncio
import contextlib

import pytest

from inventory_service.models import OrderState
from inventory_service.saga import MalformedOrderError
from tests.inventory_service.support import cancelled, confirmed, created, product


async def test_reserves_every_line_at_catalogue_prices(seeded):
    event = created(("MUG-BLUE", 2), ("TEE-M", 1), customer="bob")
    await seeded.handle(event)

    [row] = await seeded.outbox()
    assert (row.topic, row.key, row.event_type) == (
        "p.inventory",
        str(event.order_id),
        "inventory.reserved",
    )
    assert row.envelope["order_id"] == str(event.order_id)
    assert row.envelope["payload"] == {
        "customer_id": "bob",
        "lines": [
            {"sku": "MUG-BLUE", "quantity": 2, "unit_price": 1250},
            {"sku": "TEE-M", "quantity": 1, "unit_price": 2400},
        ],
        "amount": 2 * 1250 + 2400,
        "currency": "EUR",
    }
    assert await seeded.stock("MUG-BLUE") == (500, 2, 0)
    assert await seeded.stock("TEE-M") == (200, 1, 0)
    held = await seeded.reservations(event.order_id)
    assert [(r.sku, r.quantity, r.unit_price, r.status) for r in held] == [
        ("MUG-BLUE", 2, 1250, "RESERVED"),
        ("TEE-M", 1, 2400, "RESERVED"),
    ]
    assert await seeded.state(event.order_id) is OrderState.RESERVED
    assert await seeded.violations() == []


async def test_repeated_sku_lines_are_one_reservation(seeded):
    event = created(("MUG-RED", 2), ("MUG-RED", 3))
    await seeded.handle(event)
    [(kind, payload)] = await seeded.events()
    assert kind == "inventory.reserved"
    assert payload["lines"] == [{"sku": "MUG-RED", "quantity": 5, "unit_price": 1250}]
    assert [r.quantity for r in await seeded.reservations(event.order_id)] == [5]
    assert await seeded.stock("MUG-RED") == (500, 5, 0)


async def test_unknown_sku_rejects_the_whole_order(seeded):
    event = created(("MUG-BLUE", 1), ("NOPE", 1), ("SOLD-OUT", 1), ("ALSO-NOPE", 2))
    await seeded.handle(event)
    assert await seeded.events() == [
        ("inventory.rejected", {"reason": "unknown_sku", "skus": ["ALSO-NOPE", "NOPE"]})
    ]
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)
    assert await seeded.reservations() == []
    assert await seeded.state(event.order_id) is OrderState.REJECTED
    assert await seeded.violations() == []


async def test_short_stock_reserves_nothing_of_the_good_lines(seeded):
    # POSTER-LTD has 3 units, SOLD-OUT none; MUG-BLUE alone would fit.
    event = created(("MUG-BLUE", 1), ("POSTER-LTD", 4), ("SOLD-OUT", 1), ("LAMP-DESK", 25))
    await seeded.handle(event)
    assert await seeded.events() == [
        ("inventory.rejected", {"reason": "out_of_stock", "skus": ["POSTER-LTD", "SOLD-OUT"]})
    ]
    for sku, on_hand in (("MUG-BLUE", 500), ("POSTER-LTD", 3), ("LAMP-DESK", 25)):
        assert await seeded.stock(sku) == (on_hand, 0, 0)
    assert await seeded.reservations() == []
    assert await seeded.violations() == []


async def test_exact_remaining_stock_can_be_reserved_then_not_one_more(seeded):
    first, second = created(("POSTER-LTD", 3)), created(("POSTER-LTD", 1))
    await seeded.handle(first)
    await seeded.handle(second)
    assert [kind for kind, _ in await seeded.events()] == [
        "inventory.reserved",
        "inventory.rejected",
    ]
    assert await seeded.stock("POSTER-LTD") == (3, 3, 0)


async def test_cancellation_before_creation_means_never_reserving(seeded):
    event = created(("POSTER-LTD", 2))
    await seeded.handle(cancelled(event.order_id))
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    await seeded.handle(event)
    assert await seeded.outbox() == []
    assert await seeded.reservations() == []
    assert await seeded.stock("POSTER-LTD") == (3, 0, 0)
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    assert await seeded.violations() == []


async def test_cancellation_releases_the_reservation(seeded):
    event = created(("MUG-BLUE", 2), ("POSTER-LTD", 1))
    await seeded.handle(event)
    await seeded.handle(cancelled(event.order_id))
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)
    assert await seeded.stock("POSTER-LTD") == (3, 0, 0)
    assert {r.status for r in await seeded.reservations(event.order_id)} == {"RELEASED"}
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    # Releasing emits nothing: the only event is the reservation's.
    assert [kind for kind, _ in await seeded.events()] == ["inventory.reserved"]
    assert await seeded.violations() == []

    # A second cancellation (new event id) and a stray confirmation change nothing.
    await seeded.handle(cancelled(event.order_id))
    await seeded.handle(confirmed(event.order_id))
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    assert await seeded.violations() == []


async def test_cancelling_a_rejected_order_changes_no_stock(seeded):
    event = created(("SOLD-OUT", 1))
    await seeded.handle(event)
    await seeded.handle(cancelled(event.order_id, reason="out_of_stock"))
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    assert await seeded.stock("SOLD-OUT") == (0, 0, 0)
    assert await seeded.violations() == []


async def test_confirmation_commits_the_reservation(seeded):
    event = created(("MUG-BLUE", 2), ("TEE-L", 3))
    await seeded.handle(event)
    await seeded.handle(confirmed(event.order_id, amount=2 * 1250 + 3 * 2400))
    assert await seeded.stock("MUG-BLUE") == (500, 0, 2)
    assert await seeded.stock("TEE-L") == (200, 0, 3)
    assert {r.status for r in await seeded.reservations(event.order_id)} == {"COMMITTED"}
    assert await seeded.state(event.order_id) is OrderState.CONFIRMED
    assert await seeded.violations() == []

    # A repeated confirmation, a stray cancellation and a late order.created change nothing.
    await seeded.handle(confirmed(event.order_id))
    await seeded.handle(cancelled(event.order_id))
    await seeded.handle(created(("MUG-BLUE", 2), ("TEE-L", 3), order_id=event.order_id))
    assert await seeded.stock("MUG-BLUE") == (500, 0, 2)
    assert await seeded.state(event.order_id) is OrderState.CONFIRMED
    assert len(await seeded.outbox()) == 1
    assert await seeded.violations() == []


async def test_confirmation_of_an_unknown_order_is_ignored(seeded):
    event = created(("MUG-BLUE", 1))
    await seeded.handle(confirmed(event.order_id))
    assert await seeded.state(event.order_id) is None
    await seeded.handle(event)
    assert await seeded.stock("MUG-BLUE") == (500, 1, 0)


async def test_second_order_created_for_a_processed_order_is_ignored(seeded):
    event = created(("MUG-BLUE", 1))
    await seeded.handle(event)
    # Same order, another event id: the inbox cannot tell, the order's row can.
    await seeded.handle(created(("MUG-BLUE", 1), order_id=event.order_id))
    assert await seeded.stock("MUG-BLUE") == (500, 1, 0)
    assert len(await seeded.outbox()) == 1


async def test_an_order_without_lines_fails_and_writes_nothing(seeded):
    event = created()
    with pytest.raises(MalformedOrderError):
        await seeded.handle(event)
    assert await seeded.state(event.order_id) is None
    assert await seeded.outbox() == []


async def test_batches_of_other_orders_on_the_same_products_do_not_deadlock(seeded):
    # Each batch's first order wants the products the other's second order wants too, in
    # the opposite order: stock taken one step at a time, each would hold what the other
    # waits for. Locked for the whole batch first, in SKU order, the second simply waits.
    first = [created(("MUG-BLUE", 1)), created(("TEE-M", 1))]
    second = [created(("TEE-M", 2)), created(("MUG-BLUE", 2))]
    both_started = asyncio.Barrier(2)

    async def line_up():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both_started.wait(), 1)

    await asyncio.gather(
        seeded.handle_batch(first, before_steps=line_up),
        seeded.handle_batch(second, before_steps=line_up),
    )
    assert await seeded.stock("MUG-BLUE") == (500, 3, 0)
    assert await seeded.stock("TEE-M") == (200, 3, 0)
    assert await seeded.violations() == []


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
