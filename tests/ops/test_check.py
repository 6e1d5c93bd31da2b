"""`mercato check`'s judgement of each database on its own: inventory's stock and payment's
rows against the sandbox's ledger, each shown consistent and then tampered with."""

import uuid

from inventory_service.models import Product, Reservation
from mercato_ops.check import payment_violations
from payment_service.models import PaymentStatus
from tests.inventory_service.support import created
from tests.payment_service.support import reserved


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


async def test_check_finds_a_payment_row_the_ledger_contradicts(payments):
    saga, sandbox = payments
    order_id = uuid.uuid4()
    url = saga.settings.database_url.get_secret_value()
    await saga.deliver(reserved(order_id, amount=4200))
    assert await payment_violations(url, await sandbox.entries()) == []

    # The processor voided the authorization, while the row claims it was captured.
    payment = await saga.payment(order_id)
    response = await sandbox.control.post(f"/v1/authorizations/{payment.provider_ref}/void")
    assert response.status_code == 200, response.text
    await saga.tamper(order_id, status=PaymentStatus.CAPTURED.value, captured=4200)
    assert await payment_violations(url, await sandbox.entries()) == [
        f"payment of order {order_id} is CAPTURED, captured 4200, but the sandbox captured 0",
        f"payment of order {order_id} is CAPTURED, charged 4200, but the sandbox charged 0",
    ]

    # Once it says voided too, the row and the ledger agree again.
    await saga.tamper(order_id, status=PaymentStatus.VOIDED.value, captured=0)
    assert await payment_violations(url, await sandbox.entries()) == []
