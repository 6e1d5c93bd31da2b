"""Alembic plumbing shared by the services: a programmatic config and the messaging tables."""

from __future__ import annotations

import asyncio
from importlib.resources import files

from alembic import command, op
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mercato_shared.logs import configure_logging
from mercato_shared.settings import ServiceSettings
from mercato_shared.tables import OUTBOX_CHANNEL, inbox_table, outbox_table


def alembic_config(package: str, database_url: str) -> Config:
    """An Alembic config for ``<package>.migrations``; no alembic.ini to keep in sync."""
    config = Config()
    config.set_main_option("script_location", str(files(package) / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(package: str, database_url: str, revision: str = "head") -> None:
    """Apply a service's migrations up to ``revision``."""
    command.upgrade(alembic_config(package, database_url), revision)


def migrate_command(package: str, settings: ServiceSettings) -> None:
    """Body of every ``<service>-migrate`` console script."""
    configure_logging(f"{settings.service_name}-migrate", settings.log_level)
    upgrade(package, settings.database_url.get_secret_value())


def run_online(config: Config, target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py: migrate over an asyncpg connection."""

    def migrate(connection: Connection) -> None:
        from alembic import context

        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(config.attributes["database_url"], poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(main())


def create_messaging_tables_v1() -> None:
    """Create outbox and inbox as version 1 defines them; a later change adds a _v2 step."""
    bind = op.get_bind()
    metadata = MetaData()
    outbox_table(metadata)
    inbox_table(metadata)
    metadata.create_all(bind)
    # Wake relays at commit time rather than on their next poll.
    op.execute(
        "CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{OUTBOX_CHANNEL}', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )


def drop_messaging_tables_v1() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.drop_table("inbox")
    op.drop_table("outbox")
