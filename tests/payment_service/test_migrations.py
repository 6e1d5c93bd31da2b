"""The hand-written migrations and models.py describe the same schema, which goes down and up
again, and whose constraints hold."""

import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from payment_service.models import Base, Payment
from payment_service.settings import PaymentSettings
from tests.infra import migrated_down_and_up, schema_differences


async def test_models_match_the_migrated_schema(payment_db):
    assert await schema_differences(payment_db, Base.metadata) == []


async def test_downgrade_to_0001_and_back(payment_db):
    await migrated_down_and_up("payment_service", payment_db)
    assert await schema_differences(payment_db, Base.metadata) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "PENDING"},
        {"captured": 3000},
        {"captured": 1000, "refunded": 1500},
        {"amount": -1},
    ],
)
async def test_the_table_refuses_impossible_payments(payment_db, fields):
    engine = create_engine(PaymentSettings(database_url=payment_db))
    values = {"customer_id": "alice", "status": "CAPTURED", "amount": 2500, "currency": "EUR"}
    try:
        with pytest.raises(IntegrityError):
            async with transaction(create_sessionmaker(engine)) as session:
                session.add(Payment(order_id=uuid.uuid4(), **{**values, **fields}))
    finally:
        await engine.dispose()
