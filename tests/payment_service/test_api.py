"""The payment API in-process against a real, migrated Postgres database."""

import uuid

import pytest

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.identity import Role
from payment_service.app import create_app
from payment_service.models import Payment
from payment_service.settings import PaymentSettings
from tests.apps import assert_problem, client_for


@pytest.fixture
def settings(payment_db, keys):
    return PaymentSettings(database_url=payment_db, identity_public_key_file=keys[1])


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture
async def payment(settings):
    order_id = uuid.uuid4()
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            session.add(
                Payment(
                    order_id=order_id,
                    customer_id="alice",
                    status="AUTHORIZED",
                    amount=2500,
                    refunded=0,
                    currency="EUR",
                    provider_ref="sbx_1",
                )
            )
    finally:
        await engine.dispose()
    return order_id


async def test_owner_and_admin_read_a_payment_others_get_404(client, payment, sign):
    path = f"/api/v1/payments/{payment}"
    mine = await client.get(path, headers=sign("alice"))
    assert mine.status_code == 200
    assert mine.json()["amount"] == 2500
    assert (await client.get(path, headers=sign("root", Role.ADMIN))).status_code == 200
    assert_problem(await client.get(path, headers=sign("mallory")), 404)


async def test_missing_payment_and_missing_identity(client, sign):
    assert_problem(await client.get(f"/api/v1/payments/{uuid.uuid4()}", headers=sign()), 404)
    assert_problem(await client.get(f"/api/v1/payments/{uuid.uuid4()}"), 401)
