"""All SQL of the order service."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mercato_shared.outbox import OUTBOX_INSERT, outbox_insert
from mercato_shared.sql import Sql
from order_service.models import IdempotencyKey, Order, OrderStatus

# A new order in one statement: the order, its lines, its first history entry and its
# order.created outbox row, written by data-modifying CTEs that all read the CTE "src" (one
# row, the order's id, or none). Alone it is its own transaction, one round trip in all.
_WRITE_ORDER = """
created AS (
    INSERT INTO orders (id, customer_id, email, status, deadline_at)
    SELECT src.id, CAST(:customer_id AS text), CAST(:email AS text), CAST(:status AS text),
           CAST(:deadline_at AS timestamptz)
    FROM src
    RETURNING created_at, updated_at
), written_lines AS (
    INSERT INTO order_lines (order_id, line_no, sku, quantity)
    SELECT src.id, line.no, line.sku, line.quantity
    FROM src, unnest(CAST(:line_nos AS integer[]), CAST(:skus AS text[]),
                     CAST(:quantities AS integer[])) AS line (no, sku, quantity)
), entry AS (
    INSERT INTO order_history (order_id, status, step)
    SELECT src.id, CAST(:status AS text), 'created' FROM src
    RETURNING at
), event AS ("""
_WRITE_ORDER += OUTBOX_INSERT + " FROM src)"

# Constant SQL (S608): every value is a bound parameter.
_PLACE = Sql(
    "WITH src AS (SELECT CAST(:id AS uuid) AS id), "  # noqa: S608
    + _WRITE_ORDER
    + " SELECT true AS held, NULL AS known_hash, NULL AS known_order,"
    " created.created_at, created.updated_at, entry.at FROM created, entry"
)

# With an Idempotency-Key: the key's advisory lock (not waited for), its first request if it
# has one, and the order written only when the key row is: a request racing this one for the
# same key either holds the lock (held is false) or inserted the key first (nothing written,
# nothing known to this statement's snapshot; the caller asks again).
_PLACE_WITH_KEY = Sql(
    "WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_name, 0)) AS held),"  # noqa: S608
    " known AS (SELECT k.request_hash, k.order_id FROM idempotency_keys AS k, lock"
    "  WHERE lock.held AND k.customer_id = CAST(:customer_id AS text)"
    "  AND k.key = CAST(:idempotency_key AS text)),"
    " src AS (INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)"
    "  SELECT CAST(:customer_id AS text), CAST(:idempotency_key AS text),"
    "   CAST(:request_hash AS text), CAST(:id AS uuid)"
    "  FROM lock WHERE lock.held AND NOT EXISTS (SELECT 1 FROM known)"
    "  ON CONFLICT (customer_id, key) DO NOTHING RETURNING order_id AS id), "
    + _WRITE_ORDER
    + " SELECT lock.held, known.request_hash AS known_hash, known.order_id AS known_order,"
    " created.created_at, created.updated_at, entry.at"
    " FROM lock LEFT JOIN known ON true LEFT JOIN created ON true LEFT JOIN entry ON true"
)


# A pending order's next step in one statement: the row changed under its lock (the UPDATE
# takes it and re-checks PENDING once it has it) and the history entry appended.
_MOVE = (
    "WITH moved AS (UPDATE orders SET status = CAST(:status AS text),"
    " cancel_reason = COALESCE(CAST(:reason AS text), cancel_reason),"
    " amount = COALESCE(CAST(:amount AS integer), amount),"
    " currency = COALESCE(CAST(:currency AS text), currency), updated_at = now()"
    " WHERE id = CAST(:id AS uuid) AND status = CAST(:pending AS text)"
    " RETURNING id, status, customer_id, email, created_at),"
    " entry AS (INSERT INTO order_history (order_id, status, step, reason)"
    " SELECT id, status, CAST(:step AS text), CAST(:reason AS text) FROM moved)"
)
_ADVANCE = Sql(_MOVE + " SELECT customer_id, email, created_at FROM moved")  # noqa: S608 - constant SQL

# The same with the step's event written to the outbox, only if the order moved. The event's
# payload names the order's customer and address, which the row holds: the statement writes
# them into the envelope, so the step needs no read of the order first.
_ADVANCE_EMITTING = Sql(
    _MOVE  # noqa: S608 - constant SQL, values bound
    + ", event AS ("
    + outbox_insert(
        "jsonb_set(CAST(:envelope AS jsonb), '{payload}', (CAST(:envelope AS jsonb) -> 'payload')"
        " || jsonb_build_object('customer_id', moved.customer_id, 'email', moved.email))"
    )
    + " FROM moved) SELECT customer_id, email, created_at FROM moved"
)


@dataclass(frozen=True, slots=True)
class Advanced:
    """A pending order that took a step: what its events and metrics need of it."""

    customer_id: str
    email: str | None
    created_at: datetime


async def advance(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    status: OrderStatus,
    step: str,
    reason: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    event: Mapping[str, Any] | None = None,
) -> Advanced | None:
    """Move a PENDING order to ``status`` and record ``step``; None if it is not pending.

    ``event`` is the outbox row of the step's event (``outbox_row``), written only if the
    order moved, with its payload's ``customer_id`` and ``email`` set from the order.
    """
    statement = _ADVANCE if event is None else _ADVANCE_EMITTING
    row = await statement.fetchrow(
        session,
        id=order_id,
        status=status.value,
        pending=OrderStatus.PENDING.value,
        step=step,
        reason=reason,
        amount=amount,
        currency=currency,
        **(event or {}),
    )
    return None if row is None else Advanced(row["customer_id"], row["email"], row["created_at"])


_ORDER_STATUS = Sql("SELECT status FROM orders WHERE id = CAST(:id AS uuid)")


async def order_status(session: AsyncSession, order_id: uuid.UUID) -> str | None:
    """The order's status, None for an unknown order."""
    status: str | None = await _ORDER_STATUS.fetchval(session, id=order_id)
    return status


@dataclass(frozen=True, slots=True)
class Placement:
    """What writing a new order found: whether it was written, or the key's first request."""

    held: bool  # False: another request holds the Idempotency-Key right now
    known: tuple[str, uuid.UUID] | None  # the key's first request: its hash and its order
    written: tuple[datetime, datetime, datetime] | None  # created_at, updated_at, history at


async def place_order(
    conn: AsyncConnection,
    *,
    order: Mapping[str, Any],
    lines: Sequence[tuple[str, int]],
    event: Mapping[str, Any],
    key: tuple[str, str] | None,
) -> Placement:
    """Write a PENDING order with its lines, history and outbox row, in one statement.

    ``order`` holds id, customer_id, email and deadline_at; ``event`` the outbox row's values;
    ``key`` the Idempotency-Key and the request's hash, when the request has a key.
    """
    params: dict[str, Any] = {
        **order,
        "status": OrderStatus.PENDING.value,
        "line_nos": list(range(1, len(lines) + 1)),
        "skus": [sku for sku, _ in lines],
        "quantities": [quantity for _, quantity in lines],
        **event,
    }
    statement = _PLACE
    if key is not None:
        statement = _PLACE_WITH_KEY
        params["idempotency_key"], params["request_hash"] = key
        params["lock_name"] = _key_lock(order["customer_id"], key[0])
    row = await statement.fetchrow(conn, **params)
    known, written = row["known_order"], row["created_at"]
    return Placement(
        held=bool(row["held"]),
        known=None if known is None else (row["known_hash"], known),
        written=None if written is None else (written, row["updated_at"], row["at"]),
    )


async def get_order(
    session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False
) -> Order | None:
    """One order; ``for_update`` locks its row, which serialises every change to it."""
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def list_orders(
    session: AsyncSession, *, customer_id: str | None, limit: int, offset: int
) -> tuple[Sequence[Order], int]:
    query = select(Order)
    count = select(func.count()).select_from(Order)
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
        count = count.where(Order.customer_id == customer_id)
    result = await session.execute(
        query.order_by(Order.created_at.desc(), Order.id).limit(limit).offset(offset)
    )
    return result.scalars().all(), await session.scalar(count) or 0


def _key_lock(customer_id: str, key: str) -> str:
    return f"idempotency:{customer_id}:{key}"


async def try_lock_key(session: AsyncSession, customer_id: str, key: str) -> bool:
    """Take the lock a request placing an order holds on its Idempotency-Key, without waiting."""
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": _key_lock(customer_id, key)},
    )
    return bool(locked)


async def purge_keys(session: AsyncSession, *, older_than: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def overdue_orders(session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Order]:
    """Pending orders past their deadline, locked; ones locked elsewhere are skipped."""
    result = await session.execute(
        select(Order)
        .where(Order.status == OrderStatus.PENDING, Order.deadline_at < now)
        .order_by(Order.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.scalars().all()
