"""Business rules of the catalogue."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inventory_service import repository
from inventory_service.models import Product
from inventory_service.schemas import ProductPage, ProductRead
from mercato_shared.db import transaction
from mercato_shared.problems import NotFoundError


async def list_products(
    *, sessions: async_sessionmaker[AsyncSession], limit: int, offset: int
) -> ProductPage:
    async with transaction(sessions) as session:
        products = await repository.list_products(session, limit=limit, offset=offset)
        total = await repository.count_products(session)
    return ProductPage(
        items=[ProductRead.model_validate(p) for p in products],
        limit=limit,
        offset=offset,
        total=total,
    )


async def get_product(*, sessions: async_sessionmaker[AsyncSession], sku: str) -> Product:
    async with transaction(sessions) as session:
        product = await repository.get_product(session, sku)
    if product is None:
        raise NotFoundError(f"product {sku} not found")
    return product


async def seed_catalogue(
    *, sessions: async_sessionmaker[AsyncSession], products: list[Product]
) -> None:
    """Add the given products; SKUs already present keep their stock."""
    async with transaction(sessions) as session:
        await repository.upsert_catalogue(session, products)
