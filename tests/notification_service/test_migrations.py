"""The hand-written migrations and models.py describe the same schema, which goes down and up
again."""

import asyncio

from alembic import command

from mercato_shared.migrations import alembic_config
from notification_service.models import Base
from tests.infra import schema_differences


async def test_models_match_the_migrated_schema(notification_db):
    assert await schema_differences(notification_db, Base.metadata) == []


async def test_downgrade_to_0001_and_back(notification_db):
    config = alembic_config("notification_service", notification_db)
    await asyncio.to_thread(command.downgrade, config, "0001")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await schema_differences(notification_db, Base.metadata) == []
