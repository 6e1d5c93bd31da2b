"""The payment API in-process against a real, migrated Postgres database."""

import uuid

import pytest

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.identity import Role
from payment_service.app import create_app
from payment_service.models import Payment, PaymentStatus
from payment_service.settings import PaymentSettings
from tests.apps import assert_problem, client_for


@pytest.fixture
def settings(payment_db, keys):
    return PaymentSettings(database_url=payment_db, identity_public_keys=keys[1])


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture
async def add_payment(settings):
    engine = create_engine(settings)

    async def add(**fields):
        order_id = uuid.uuid4()
        values = {
            "customer_id": "alice",
            "status": PaymentStatus.AUTHORIZED,
            "amount": 2500,
            "currency": "EUR",
            "provider_ref": "auth_1",
            "idempotency_key": f"auth-{order_id}",
            **fields,
        }
        async with transaction(create_sessionmaker(engine)) as session:
            session.add(Payment(order_id=order_id, **values))
        return order_id

    yield add
    await engine.dispose()


async def test_owner_and_admin_read_a_payment_others_get_404(client, add_payment, sign):
    order_id = await add_payment()
    path = f"/api/v1/payments/{order_id}"
    mine = await client.get(path, headers=sign("alice"))
    assert mine.status_code == 200
    body = mine.json()
    assert (body["status"], body["amount"], body["currency"]) == ("AUTHORIZED", 2500, "EUR")
    assert (body["provider_ref"], body["idempotency_key"]) == ("auth_1", f"auth-{order_id}")
    assert (await client.get(path, headers=sign("root", Role.ADMIN))).status_code == 200
    assert_problem(await client.get(path, headers=sign("mallory")), 404)


async def test_a_refunded_payment_shows_its_amounts(client, add_payment, sign):
    order_id = await add_payment(status=PaymentStatus.REFUNDED, captured=2500, refunded=2500)
    body = (await client.get(f"/api/v1/payments/{order_id}", headers=sign())).json()
    assert (body["captured"], body["refunded"], body["charged"]) == (2500, 2500, 0)


async def test_a_cancellation_marker_reads_as_a_cancelled_payment(client, add_payment, sign):
    order_id = await add_payment(
        status=PaymentStatus.CANCELLED, amount=0, currency=None, provider_ref=None
    )
    body = (await client.get(f"/api/v1/payments/{order_id}", headers=sign())).json()
    assert (body["status"], body["amount"], body["currency"], body["charged"]) == (
        "CANCELLED",
        0,
        None,
        0,
    )


async def test_missing_payment_bad_id_and_missing_identity(client, sign):
    assert_problem(await client.get(f"/api/v1/payments/{uuid.uuid4()}", headers=sign()), 404)
    assert_problem(await client.get("/api/v1/payments/not-a-uuid", headers=sign()), 422)
    assert_problem(await client.get(f"/api/v1/payments/{uuid.uuid4()}"), 401)
