"""The hand-written migrations and models.py describe the same schema."""

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from inventory_service.models import Base
from mercato_shared.migrations import alembic_config


async def _differences(url: str) -> list[object]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


async def test_models_match_the_migrated_schema(inventory_db):
    assert await _differences(inventory_db) == []


async def test_reservations_migration_downgrades_and_upgrades_again(inventory_db):
    config = alembic_config("inventory_service", inventory_db)
    await asyncio.to_thread(command.downgrade, config, "0001")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _differences(inventory_db) == []
