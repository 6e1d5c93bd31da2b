"""All SQL of the inventory service."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inventory_service.models import (
    OrderState,
    Product,
    Reservation,
    ReservationStatus,
)
from mercato_shared.outbox import OUTBOX_INSERT
from mercato_shared.sql import Sql

# --- products -------------------------------------------------------------------------------


async def list_products(session: AsyncSession, *, limit: int, offset: int) -> Sequence[Product]:
    result = await session.execute(
        select(Product).order_by(Product.sku).limit(limit).offset(offset)
    )
    return result.scalars().all()


async def count_products(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Product)) or 0


async def get_product(session: AsyncSession, sku: str) -> Product | None:
    return await session.get(Product, sku)


async def lock_products(session: AsyncSession, skus: Iterable[str]) -> dict[str, Product]:
    """Lock the known products among ``skus``, in SKU order so that lockers never deadlock."""
    result = await session.execute(
        select(Product)
        .where(Product.sku.in_(sorted(set(skus))))
        .order_by(Product.sku)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {product.sku: product for product in result.scalars()}


# The saga's statements run on the driver (mercato_shared.sql): they are its hot path.

# Products of the batch's new orders and of its settled orders' reservations, in SKU order.
_LOCK_STOCK = Sql(
    "SELECT sku FROM products WHERE sku = ANY(CAST(:skus AS text[]))"
    " OR sku IN (SELECT sku FROM reservations WHERE order_id = ANY(CAST(:orders AS uuid[])))"
    " ORDER BY sku FOR UPDATE"
)


@dataclass(frozen=True, slots=True)
class Stock:
    """What a reservation needs to know of a product: its price and what is left."""

    unit_price: int
    currency: str
    available: int


async def lock_stock(
    session: AsyncSession, skus: Iterable[str], orders: Sequence[uuid.UUID]
) -> None:
    """Lock the products of ``skus`` and of the orders' reservations, in SKU order."""
    await _LOCK_STOCK.execute(session, skus=sorted(set(skus)), orders=list(orders))


async def catalogue_currencies(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(Product.currency).distinct())).all())


async def upsert_catalogue(session: AsyncSession, products: Sequence[Product]) -> None:
    """Insert products; existing SKUs keep their stock (a reseed never erases reservations)."""
    if not products:
        return
    stmt = insert(Product).values(
        [
            {
                "sku": p.sku,
                "name": p.name,
                "unit_price": p.unit_price,
                "currency": p.currency,
                "on_hand": p.on_hand,
                "reserved": 0,
                "committed": 0,
            }
            for p in products
        ]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Product.sku],
            set_={"name": stmt.excluded.name, "unit_price": stmt.excluded.unit_price},
        )
    )


# --- what inventory knows about each order ----------------------------------------------------


_LOCK_ORDER = Sql(
    "SELECT state FROM order_outcomes WHERE order_id = CAST(:order_id AS uuid) FOR UPDATE"
)
_CLAIM_ORDER = Sql(
    "INSERT INTO order_outcomes (order_id, state) VALUES (CAST(:order_id AS uuid),"
    " CAST(:state AS text)) ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
_SET_ORDER_STATE = Sql(
    "UPDATE order_outcomes SET state = CAST(:state AS text), updated_at = now()"
    " WHERE order_id = CAST(:order_id AS uuid)"
)


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> OrderState | None:
    """Lock the order's row; None if inventory has never heard of the order."""
    state = await _LOCK_ORDER.fetchval(session, order_id=order_id)
    return None if state is None else OrderState(state)


async def claim_order(
    session: AsyncSession, order_id: uuid.UUID, *, state: OrderState
) -> OrderState | None:
    """Lock the order's row, creating it in ``state`` if absent.

    Returns the state it already had, or None when this call created it. A concurrent
    creator makes the insert wait for its commit, so both callers end up serialised.
    """
    if await _CLAIM_ORDER.fetchval(session, order_id=order_id, state=state.value) is not None:
        return None
    return await _claimed_before(session, order_id)


async def _claimed_before(session: AsyncSession, order_id: uuid.UUID) -> OrderState:
    """Lock the row a claim found in place; its state."""
    previous = await lock_order(session, order_id)
    if previous is None:  # rows are never deleted, so the conflicting one is still there
        raise RuntimeError(f"order {order_id} vanished while being claimed")
    return previous


# A new order's claim and the stock it asks for, in one statement: the order's row created
# (RESERVED, provisionally) unless it exists, and the products read and locked in SKU order
# (lockers never deadlock; a batch's lock_stock holds them already).
_CLAIM_WITH_STOCK = Sql(
    "WITH claimed AS (INSERT INTO order_outcomes (order_id, state) VALUES"
    " (CAST(:order_id AS uuid), CAST(:state AS text)) ON CONFLICT (order_id) DO NOTHING"
    " RETURNING order_id),"
    " stock AS (SELECT sku, unit_price, currency, on_hand - reserved - committed AS available"
    " FROM products WHERE sku = ANY(CAST(:skus AS text[])) ORDER BY sku FOR UPDATE)"
    " SELECT (SELECT count(*) FROM claimed) AS claimed, stock.*"
    " FROM (SELECT 1) AS one LEFT JOIN stock ON true"
)


async def claim_with_stock(
    session: AsyncSession, order_id: uuid.UUID, skus: Iterable[str], *, state: OrderState
) -> tuple[OrderState | None, dict[str, Stock]]:
    """``claim_order`` and the known products among ``skus``, locked, in one round trip.

    Returns the state the order already had (and no products), or None and the products.
    """
    rows = await _CLAIM_WITH_STOCK.fetch(
        session, order_id=order_id, state=state.value, skus=sorted(set(skus))
    )
    if not rows[0]["claimed"]:
        return await _claimed_before(session, order_id), {}
    stock = {
        row["sku"]: Stock(row["unit_price"], row["currency"], row["available"])
        for row in rows
        if row["sku"] is not None
    }
    return None, stock


async def set_order_state(session: AsyncSession, order_id: uuid.UUID, state: OrderState) -> None:
    await _SET_ORDER_STATE.execute(session, order_id=order_id, state=state.value)


# --- reservations -----------------------------------------------------------------------------


# A reserved order's writes in one statement: its reservations, the products' reserved
# counts (their rows locked already, by claim_with_stock) and its inventory.reserved event.
_RESERVE = Sql(
    "WITH held AS (INSERT INTO reservations (order_id, sku, quantity, unit_price, status)"  # noqa: S608 - constant SQL, values bound
    " SELECT CAST(:order_id AS uuid), line.sku, line.quantity, line.unit_price,"
    " CAST(:status AS text) FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS integer[]),"
    " CAST(:prices AS integer[])) AS line (sku, quantity, unit_price)),"
    " stock AS (UPDATE products SET reserved = products.reserved + line.quantity"
    " FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS integer[])) AS line (sku, quantity)"
    " WHERE products.sku = line.sku) " + OUTBOX_INSERT
)

# An order's holds settled in one statement: its RESERVED reservations moved on, the
# products' counts moved with them, and the order's state set.
_SETTLE = Sql(
    "WITH settled AS (UPDATE reservations SET status = CAST(:new AS text), updated_at = now()"
    " WHERE order_id = CAST(:order_id AS uuid) AND status = CAST(:old AS text)"
    " RETURNING sku, quantity),"
    " stock AS (UPDATE products SET reserved = products.reserved - settled.quantity,"
    " committed = products.committed"
    " + CASE WHEN CAST(:sold AS boolean) THEN settled.quantity ELSE 0 END"
    " FROM settled WHERE products.sku = settled.sku),"
    " state AS (UPDATE order_outcomes SET state = CAST(:state AS text), updated_at = now()"
    " WHERE order_id = CAST(:order_id AS uuid))"
    " SELECT count(*) FROM settled"
)


async def reserve_lines(
    session: AsyncSession,
    order_id: uuid.UUID,
    lines: Sequence[tuple[str, int, int]],
    *,
    event: Mapping[str, Any],
) -> None:
    """Hold (sku, quantity, unit_price) for the order and write its event, in one statement.

    The products' rows must be locked already (claim_with_stock) in this transaction.
    """
    await _RESERVE.execute(
        session,
        order_id=order_id,
        status=ReservationStatus.RESERVED.value,
        skus=[sku for sku, _, _ in lines],
        quantities=[quantity for _, quantity, _ in lines],
        prices=[price for _, _, price in lines],
        **event,
    )


async def settle(
    session: AsyncSession, order_id: uuid.UUID, *, to: ReservationStatus, state: OrderState
) -> int:
    """Move the order's RESERVED holds to ``to`` (COMMITTED sells them), set its state.

    Returns how many reservations moved. The order's row must be locked already.
    """
    moved = await _SETTLE.fetchval(
        session,
        order_id=order_id,
        old=ReservationStatus.RESERVED.value,
        new=to.value,
        sold=to is ReservationStatus.COMMITTED,
        state=state.value,
    )
    return int(moved or 0)


def _of_sku(sku: str, status: ReservationStatus | None) -> list[ColumnElement[bool]]:
    conditions = [Reservation.sku == sku]
    if status is not None:
        conditions.append(Reservation.status == status.value)
    return conditions


async def list_reservations(
    session: AsyncSession,
    sku: str,
    *,
    status: ReservationStatus | None,
    limit: int,
    offset: int,
) -> Sequence[Reservation]:
    result = await session.execute(
        select(Reservation)
        .where(*_of_sku(sku, status))
        .order_by(Reservation.created_at.desc(), Reservation.order_id.desc())
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all()


async def count_reservations(
    session: AsyncSession, sku: str, *, status: ReservationStatus | None
) -> int:
    query = select(func.count()).select_from(Reservation).where(*_of_sku(sku, status))
    return await session.scalar(query) or 0
