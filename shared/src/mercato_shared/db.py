"""Async SQLAlchemy helpers: one engine per process, one transaction per unit of work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from mercato_shared.settings import ServiceSettings

# A pooled connection handed back this recently is handed out again without a ping.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "mercato_checked_in_at"
_SERIAL_LOCK = "mercato_serial_lock"


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """Build the process's engine; its pool replaces connections a Postgres restart broke."""
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        # A fixed pool: past its size a checkout waits for a connection rather than opening
        # one. Overflow connections are closed when checked in, so under load each burst
        # paid a new connection's authentication and asyncpg's type introspection, on both
        # sides, for a handful of statements.
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_recycle=1800,
        # The connection checked in last goes out first: under load the few in use stay
        # within the ping window, where a queue would rotate through the whole pool.
        pool_use_lifo=True,
    )
    ping_when_idle(engine, idle_seconds=PING_AFTER_IDLE_SECONDS)
    return engine


def ping_when_idle(engine: AsyncEngine, *, idle_seconds: float) -> None:
    """Check a pooled connection on checkout unless it was in use within ``idle_seconds``.

    SQLAlchemy's pool_pre_ping pings on every checkout, and asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK): under load that was a third of a worker's
    round trips, for connections used milliseconds before. A connection whose socket the
    server closed (a restart, pg_terminate_backend) is known closed without a round trip and
    is always checked; a busy connection that breaks silently fails its next statement
    instead, which invalidates the pool as any disconnect does (consumers retry it).
    """
    dialect: Dialect = engine.dialect

    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # A connection just opened needs no ping on its first checkout.
        record.info[_CHECKED_IN_AT] = time.monotonic()

    def on_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        # .info goes with the connection: a replaced one starts empty, then on_connect fills it.
        checked_in = record.info.pop(_CHECKED_IN_AT, None)
        driver = record.driver_connection
        if (
            checked_in is not None
            and time.monotonic() - checked_in < idle_seconds
            and driver is not None
            and not driver.is_closed()
        ):
            return
        # As pool_pre_ping does: a failed ping means a server restart, which broke every
        # pooled connection, so the pool replaces them all; other errors propagate.
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError(f"pooled connection is broken: {error}") from error
            raise

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "checkin", on_checkin)
    event.listen(engine.sync_engine, "checkout", on_checkout)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers read attributes after commit to build responses.
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits once on success, rolls back on any exception."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def serial(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A turn at a session that concurrent steps share: one of them at a time uses it.

    A session runs one statement at a time, and a flush must not see objects change under
    it. Steps that wait on a remote call at the same time (a consumer's ``concurrency``) hold
    their turn for their database work and their changes to loaded objects, and let it go
    while they wait.
    """
    lock = session.info.get(_SERIAL_LOCK)
    if lock is None:
        lock = session.info[_SERIAL_LOCK] = asyncio.Lock()
    async with lock:
        yield session


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has committed; never on a rollback."""
    event.listen(session.sync_session, "after_commit", lambda _: callback(), once=True)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
