"""Constant SQL run on the asyncpg connection under a SQLAlchemy transaction.

The saga's steps run a handful of constant statements per event, and SQLAlchemy's execution
layer (the execution context, the result, the greenlet hop) costs more CPU per statement
than the driver does: ``python -m bench micro`` measures it (docs/adr/0005 gives the figures).
A ``Sql`` is compiled once, by SQLAlchemy, into asyncpg's ``$n`` form, and runs on the very
connection, and inside the very transaction, of the session or connection it is given, so it
mixes freely with ORM and Core statements of the same unit of work.

What a caller gives up: values are passed as asyncpg takes them (JSON as text, enums as their
values), rows come back as ``asyncpg.Record``, and the ORM's identity map does not see the
changes (use it for rows the ORM has not loaded). Errors are raised as SQLAlchemy's
``DBAPIError`` wrapping asyncpg's, with the connection invalidated when it broke, so callers
handle them as they handle SQLAlchemy's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mercato_shared.tracing import enabled as tracing_enabled
from mercato_shared.tracing import tracer

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_DRIVER = "mercato_driver"

# Failures that leave the connection unusable: SQLAlchemy's pool must replace it.
_BROKEN = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


class Sql:
    """One constant statement with ``:named`` parameters, compiled once."""

    __slots__ = ("names", "sql")

    def __init__(self, statement: str) -> None:
        compiled = text(statement).compile(dialect=_DIALECT)
        self.sql: str = compiled.string
        # Each name once, in the order of its $n: a name used twice is one parameter.
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def _args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetch(self, on: AsyncSession | AsyncConnection, /, **params: Any) -> list[Any]:
        """Every row (``asyncpg.Record``)."""
        rows: list[Any] = await self._run("fetch", on, params)
        return rows

    async def fetchrow(self, on: AsyncSession | AsyncConnection, /, **params: Any) -> Any:
        """The first row, None if there is none."""
        return await self._run("fetchrow", on, params)

    async def fetchval(self, on: AsyncSession | AsyncConnection, /, **params: Any) -> Any:
        """The first row's first column, None if there is no row."""
        return await self._run("fetchval", on, params)

    async def execute(self, on: AsyncSession | AsyncConnection, /, **params: Any) -> None:
        """Run it for its effects (its rows, if any, are read and dropped)."""
        await self._run("fetch", on, params)

    async def _run(
        self, method: str, on: AsyncSession | AsyncConnection, params: Mapping[str, Any]
    ) -> Any:
        conn = await driver_connection(on)
        with self._span():
            try:
                return await getattr(conn, method)(self.sql, *self._args(params))
            except _DRIVER_ERRORS as exc:
                raise await _translated(on, self.sql, exc) from exc

    def _span(self) -> AbstractContextManager[Any]:
        # SQLAlchemy's instrumentation makes a span per statement it runs; these statements
        # bypass it, so they make their own, as it would.
        if not _traced():
            return contextlib.nullcontext()
        return tracer.start_as_current_span(
            self.sql.split(None, 1)[0],
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": self.sql},
        )


@functools.cache
def _traced() -> bool:
    return tracing_enabled()


_DRIVER_ERRORS = (asyncpg.PostgresError, *_BROKEN)


async def driver_connection(on: AsyncSession | AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection of ``on``'s transaction, its BEGIN sent.

    Remembered per session transaction: asking SQLAlchemy for the connection again costs
    about as much as a statement on it.
    """
    if isinstance(on, AsyncSession):
        transaction = on.sync_session.get_transaction()
        known = on.info.get(_DRIVER)
        if known is not None and transaction is not None and known[0] is transaction:
            return known[1]
        conn = await on.connection()
        driver = await _driver_of(conn)
        on.info[_DRIVER] = (on.sync_session.get_transaction(), driver)
        return driver
    return await _driver_of(on)


async def _driver_of(conn: AsyncConnection) -> asyncpg.Connection:
    if not conn.in_transaction():
        # As SQLAlchemy's own first statement would: its commit() then commits this work.
        await conn.begin()
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    adapted = raw.dbapi_connection
    if adapted is None or adapted.autocommit or driver.is_in_transaction():
        return driver
    # SQLAlchemy's adapter sends BEGIN with its first statement, and COMMIT or ROLLBACK only
    # for a BEGIN it sent: the transaction must be opened through it. Its own opener does it
    # with BEGIN alone; an adapter without one is given a statement to open it with.
    start = getattr(adapted, "_start_transaction", None)
    if start is not None:
        await start()
    else:
        await conn.execute(text("SELECT 1"))
    return driver


async def _translated(
    on: AsyncSession | AsyncConnection, sql: str, exc: BaseException
) -> DBAPIError:
    """The driver's error as SQLAlchemy raises it, the pool told of a broken connection."""
    broken = isinstance(exc, _BROKEN)
    if broken:
        conn = (await on.connection()) if isinstance(on, AsyncSession) else on
        await conn.invalidate(exc if isinstance(exc, Exception) else None)
    return DBAPIError(sql, None, exc, connection_invalidated=broken)
