"""The hand-written migrations and models.py describe the same schema, which goes down and up
again."""

from order_service.models import Base
from tests.infra import migrated_down_and_up, schema_differences


async def test_models_match_the_migrated_schema(order_db):
    assert await schema_differences(order_db, Base.metadata) == []


async def test_downgrade_to_0001_and_back(order_db):
    await migrated_down_and_up("order_service", order_db)
    assert await schema_differences(order_db, Base.metadata) == []
