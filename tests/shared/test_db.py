"""The engine's pool against real Postgres: pings only idle connections, replaces broken ones."""

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mercato_shared.db import create_engine, ping_when_idle
from mercato_shared.settings import ServiceSettings
from tests.infra import eventually


@pytest.fixture
async def engine(empty_db):
    engine = create_engine(ServiceSettings(service_name="db-test", database_url=empty_db))
    yield engine
    await engine.dispose()


def _count_pings(engine: AsyncEngine) -> list[int]:
    pings = [0]
    original = engine.dialect.do_ping

    def counting(dbapi_connection):
        pings[0] += 1
        return original(dbapi_connection)

    engine.dialect.do_ping = counting  # type: ignore[method-assign]
    return pings


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


async def test_a_connection_used_moments_ago_is_not_pinged(engine):
    pings = _count_pings(engine)
    first = await _backend_pid(engine)
    for _ in range(5):
        assert await _backend_pid(engine) == first
    assert pings[0] == 0


async def test_an_idle_connection_is_pinged_on_checkout(empty_db):
    engine = create_async_engine(empty_db)
    ping_when_idle(engine, idle_seconds=0.0)
    pings = _count_pings(engine)
    try:
        for _ in range(3):
            await _backend_pid(engine)
    finally:
        await engine.dispose()
    assert pings[0] == 3  # every checkout


async def test_a_connection_the_server_closed_is_replaced_without_an_error(engine, empty_db):
    pings = _count_pings(engine)
    checked_in = []
    event.listen(
        engine.sync_engine, "checkin", lambda _, record: checked_in.append(record.driver_connection)
    )
    first = await _backend_pid(engine)
    admin = await asyncpg.connect(empty_db.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()

    async def closed() -> bool:
        # The pooled connection learns of the server's close from its socket, idle as it is.
        return bool(checked_in[-1].is_closed())

    await eventually(closed, within=10)
    # Checked in moments ago, yet closed: pinged, found broken, replaced.
    assert await _backend_pid(engine) != first
    assert pings[0] == 1
