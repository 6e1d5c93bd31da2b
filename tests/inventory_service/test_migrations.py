"""The hand-written migrations and models.py describe the same schema."""

import asyncio

from alembic import command

from inventory_service.models import Base
from mercato_shared.migrations import alembic_config
from tests.infra import schema_differences


async def test_models_match_the_migrated_schema(inventory_db):
    assert await schema_differences(inventory_db, Base.metadata) == []


async def test_reservations_migration_downgrades_and_upgrades_again(inventory_db):
    config = alembic_config("inventory_service", inventory_db)
    await asyncio.to_thread(command.downgrade, config, "0001")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await schema_differences(inventory_db, Base.metadata) == []
