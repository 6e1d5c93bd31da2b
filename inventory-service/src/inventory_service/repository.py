"""All SQL of the inventory service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inventory_service.models import Product


async def list_products(session: AsyncSession, *, limit: int, offset: int) -> Sequence[Product]:
    result = await session.execute(
        select(Product).order_by(Product.sku).limit(limit).offset(offset)
    )
    return result.scalars().all()


async def count_products(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Product)) or 0


async def get_product(session: AsyncSession, sku: str) -> Product | None:
    return await session.get(Product, sku)


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
