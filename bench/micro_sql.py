"""CPU per statement of the saga's SQL: through SQLAlchemy's session, and as ``Sql`` on asyncpg.

The statement is inventory's claim of an order (one-row INSERT … ON CONFLICT DO NOTHING
RETURNING), run in one transaction on a scratch database with the inventory schema, as a
saga step runs it. Four ways: the ORM's Core insert through ``AsyncSession.execute`` (how the
steps ran before ``mercato_shared.sql``), the same SQL as ``text()`` through the session,
``Sql`` on the session (how they run now), and bare asyncpg (the floor). CPU time of this
process only: Postgres's share is the same for all four.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inventory_service.models import OrderOutcome
from inventory_service.settings import InventorySettings
from mercato_shared.db import create_engine, create_sessionmaker
from mercato_shared.sql import Sql, driver_connection
from tests.infra import create_database, drop_database

STATEMENTS = 2000
ROUNDS = 3

_SQL = (
    "INSERT INTO order_outcomes (order_id, state) VALUES (CAST(:order_id AS uuid),"
    " CAST(:state AS text)) ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
_TEXT = text(_SQL)
_DRIVER = Sql(_SQL)

Step = Callable[[AsyncSession, uuid.UUID], Awaitable[Any]]


async def _orm(session: AsyncSession, order_id: uuid.UUID) -> Any:
    statement = (
        insert(OrderOutcome)
        .values(order_id=order_id, state="RESERVED")
        .on_conflict_do_nothing(index_elements=[OrderOutcome.order_id])
        .returning(OrderOutcome.order_id)
    )
    return (await session.execute(statement)).first()


async def _text(session: AsyncSession, order_id: uuid.UUID) -> Any:
    return (await session.execute(_TEXT, {"order_id": order_id, "state": "RESERVED"})).first()


async def _sql(session: AsyncSession, order_id: uuid.UUID) -> Any:
    return await _DRIVER.fetchval(session, order_id=order_id, state="RESERVED")


async def _asyncpg(session: AsyncSession, order_id: uuid.UUID) -> Any:
    conn = await driver_connection(session)
    return await conn.fetchval(_DRIVER.sql, order_id, "RESERVED")


PATHS: dict[str, tuple[str, Step]] = {
    "orm": ("ORM insert, AsyncSession.execute", _orm),
    "text": ("text(), AsyncSession.execute", _text),
    "sql": ("Sql on the session (mercato_shared.sql)", _sql),
    "asyncpg": ("asyncpg alone", _asyncpg),
}


async def _round(sessions: Any, step: Step) -> float:
    """Microseconds of CPU per statement, over STATEMENTS in one transaction."""
    async with sessions() as session, session.begin():
        # As the consumer does: the inbox insert opened the transaction before the steps.
        await session.execute(text("SELECT 1"))
        await step(session, uuid.uuid4())
        started = time.process_time()
        for _ in range(STATEMENTS):
            await step(session, uuid.uuid4())
        spent = time.process_time() - started
        await session.rollback()
    return spent * 1e6 / STATEMENTS


async def measure() -> dict[str, Any]:
    """Best round per path, in µs of CPU per statement, and each path against ``sql``."""
    url = await create_database("inventory_service")
    engine = create_engine(InventorySettings(database_url=url))
    try:
        sessions = create_sessionmaker(engine)
        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, (_, step) in PATHS.items():
                spent = await _round(sessions, step)
                best[name] = min(best.get(name, spent), spent)
    finally:
        await engine.dispose()
        await drop_database(url)
    results: dict[str, Any] = {
        name: {"label": label, "cpu_us_per_statement": round(best[name], 1)}
        for name, (label, _) in PATHS.items()
    }
    for name, (label, _) in PATHS.items():
        print(f"    {label:44} {best[name]:7.1f} µs of CPU per statement", flush=True)
    results["orm_over_sql"] = round(best["orm"] / best["sql"], 2)
    return results
