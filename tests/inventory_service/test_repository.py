"""The inventory service's SQL against a real, migrated Postgres database."""

import uuid

from inventory_service import repository
from inventory_service.models import OrderState, ReservationStatus
from mercato_shared.db import transaction
from tests.inventory_service.support import created, product


async def test_a_reseed_renames_and_reprices_but_keeps_the_stock(seeded):
    await seeded.handle(created(("MUG-BLUE", 2)))
    async with transaction(seeded.sessions) as session:
        await repository.upsert_catalogue(
            session, [product("MUG-BLUE", 1, unit_price=999), product("NEW-CAP", 7)]
        )
    async with transaction(seeded.sessions) as session:
        mug = await repository.get_product(session, "MUG-BLUE")
        cap = await repository.get_product(session, "NEW-CAP")
        currencies = await repository.catalogue_currencies(session)
    assert mug is not None
    assert cap is not None
    assert (mug.unit_price, mug.on_hand, mug.reserved) == (999, 500, 2)
    assert (cap.on_hand, cap.reserved, cap.committed) == (7, 0, 0)
    assert currencies == {"EUR"}


async def test_lock_products_locks_only_the_known_skus(seeded):
    async with transaction(seeded.sessions) as session:
        locked = await repository.lock_products(session, ["TEE-M", "NOPE", "MUG-BLUE", "TEE-M"])
    assert sorted(locked) == ["MUG-BLUE", "TEE-M"]
    assert locked["MUG-BLUE"].on_hand == 500


async def test_claiming_an_order_creates_it_once_and_reports_what_it_was(inventory):
    order_id = uuid.uuid4()
    async with transaction(inventory.sessions) as session:
        assert await repository.lock_order(session, order_id) is None
        assert await repository.claim_order(session, order_id, state=OrderState.CANCELLED) is None
    async with transaction(inventory.sessions) as session:
        previous = await repository.claim_order(session, order_id, state=OrderState.RESERVED)
        assert previous is OrderState.CANCELLED
        assert await repository.lock_order(session, order_id) is OrderState.CANCELLED


async def test_claiming_with_stock_reads_the_known_products_only_for_a_new_order(seeded):
    order_id = uuid.uuid4()
    async with transaction(seeded.sessions) as session:
        previous, stock = await repository.claim_with_stock(
            session, order_id, ["TEE-M", "NOPE", "MUG-BLUE"], state=OrderState.RESERVED
        )
        assert previous is None
        assert sorted(stock) == ["MUG-BLUE", "TEE-M"]
        assert stock["MUG-BLUE"].available == 500
        assert await repository.lock_order(session, order_id) is OrderState.RESERVED
    async with transaction(seeded.sessions) as session:
        previous, stock = await repository.claim_with_stock(
            session, order_id, ["MUG-BLUE"], state=OrderState.RESERVED
        )
    assert (previous, stock) == (OrderState.RESERVED, {})
    async with transaction(seeded.sessions) as session:
        previous, stock = await repository.claim_with_stock(
            session, uuid.uuid4(), ["NOPE"], state=OrderState.RESERVED
        )
    assert (previous, stock) == (None, {})


async def test_settling_moves_the_holds_and_their_counts(seeded):
    event = created(("MUG-BLUE", 2), ("TEE-M", 1))
    await seeded.handle(event)
    async with transaction(seeded.sessions) as session:
        assert await repository.lock_order(session, event.order_id) is OrderState.RESERVED
        moved = await repository.settle(
            session, event.order_id, to=ReservationStatus.COMMITTED, state=OrderState.CONFIRMED
        )
        again = await repository.settle(
            session, event.order_id, to=ReservationStatus.RELEASED, state=OrderState.CANCELLED
        )
    assert (moved, again) == (2, 0)
    assert await seeded.stock("MUG-BLUE") == (500, 0, 2)
    assert await seeded.stock("TEE-M") == (200, 0, 1)
    # The state is set whether or not holds moved: an order may be settled that held none.
    assert await seeded.state(event.order_id) is OrderState.CANCELLED
    async with transaction(seeded.sessions) as session:
        held = await repository.list_reservations(
            session, "MUG-BLUE", status=ReservationStatus.COMMITTED, limit=10, offset=0
        )
        counted = await repository.count_reservations(
            session, "MUG-BLUE", status=ReservationStatus.RESERVED
        )
    assert [(r.order_id, r.quantity) for r in held] == [(event.order_id, 2)]
    assert counted == 0
