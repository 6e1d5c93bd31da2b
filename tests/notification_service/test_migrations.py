"""The hand-written migrations and models.py describe the same schema, which goes down and up
again."""

from notification_service.models import Base
from tests.infra import migrated_down_and_up, schema_differences


async def test_models_match_the_migrated_schema(notification_db):
    assert await schema_differences(notification_db, Base.metadata) == []


async def test_downgrade_to_0001_and_back(notification_db):
    await migrated_down_and_up("notification_service", notification_db)
    assert await schema_differences(notification_db, Base.metadata) == []
