"""The hand-written migrations and models.py describe the same schema."""

from inventory_service.models import Base
from tests.infra import migrated_down_and_up, schema_differences


async def test_models_match_the_migrated_schema(inventory_db):
    assert await schema_differences(inventory_db, Base.metadata) == []


async def test_reservations_migration_downgrades_and_upgrades_again(inventory_db):
    await migrated_down_and_up("inventory_service", inventory_db)
    assert await schema_differences(inventory_db, Base.metadata) == []
