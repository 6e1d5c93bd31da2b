"""The outbox and inbox of tables.py against their frozen first migration."""

from sqlalchemy import Column, MetaData, Text

from mercato_shared.tables import inbox_table, outbox_table
from tests.infra import schema_differences

MESSAGING = {"outbox", "inbox"}


def _messaging() -> MetaData:
    metadata = MetaData()
    outbox_table(metadata)
    inbox_table(metadata)
    return metadata


async def test_the_messaging_tables_match_their_migration(order_db):
    assert await schema_differences(order_db, _messaging(), tables=MESSAGING) == []


async def test_a_change_to_tables_py_without_a_migration_shows(order_db):
    metadata = _messaging()
    metadata.tables["outbox"].append_column(Column("priority", Text, nullable=True))
    differences = await schema_differences(order_db, metadata, tables=MESSAGING)
    assert [(kind, table, column.name) for kind, _, table, column in differences] == [
        ("add_column", "outbox", "priority")
    ]
