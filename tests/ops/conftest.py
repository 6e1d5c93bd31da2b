"""Fixtures of the operator tests: an inventory and a payment database for `mercato check`."""

import pytest

from inventory_service.catalogue import demo_products
from inventory_service.settings import InventorySettings
from mercato_shared.db import create_engine, create_sessionmaker
from payment_service.settings import PaymentSettings
from tests.inventory_service.support import opened
from tests.payment_service.support import Saga, Sandbox


@pytest.fixture
async def seeded(inventory_db):
    """An inventory database with the demo catalogue, driven as its worker drives it."""
    async with opened(InventorySettings(database_url=inventory_db, kafka_prefix="p.")) as inventory:
        await inventory.seed(demo_products())
        yield inventory


@pytest.fixture
async def payments(payment_db, tmp_path):
    """(saga, sandbox): payment's steps on a payment database, paying at a sandbox."""
    sandbox = Sandbox(tmp_path / "sandbox.db")
    await sandbox.start()
    settings = PaymentSettings(database_url=payment_db, kafka_prefix="p.", sandbox_url=sandbox.url)
    engine = create_engine(settings)
    saga = Saga(settings, create_sessionmaker(engine))
    try:
        yield saga, sandbox
    finally:
        await saga.sandbox.aclose()
        await engine.dispose()
        await sandbox.stop()
