"""Business rules of the catalogue and its stock: one function, one transaction."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inventory_service import repository
from inventory_service.models import Product, Reservation, ReservationStatus
from inventory_service.schemas import ProductPage, ProductRead, ReservationPage, ReservationRead
from mercato_shared.db import transaction
from mercato_shared.problems import ConflictError, NotFoundError

log = logging.getLogger(__name__)


class CatalogueError(ValueError):
    """The catalogue breaks a rule the saga relies on (one currency for every product)."""


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
    """Add the given products; SKUs already present keep their stock.

    The catalogue has a single currency: an order's amount is one sum in one currency.
    """
    async with transaction(sessions) as session:
        currencies = await repository.catalogue_currencies(session)
        currencies.update(product.currency for product in products)
        if len(currencies) > 1:
            raise CatalogueError(f"one currency per catalogue, got {sorted(currencies)}")
        await repository.upsert_catalogue(session, products)


async def set_stock(
    *, sessions: async_sessionmaker[AsyncSession], sku: str, on_hand: int, actor: str
) -> Product:
    """Set the units on hand; never below what reservations and sales already account for."""
    async with transaction(sessions) as session:
        product = (await repository.lock_products(session, [sku])).get(sku)
        if product is None:
            raise NotFoundError(f"product {sku} not found")
        floor = product.reserved + product.committed
        if on_hand < floor:
            raise ConflictError(
                f"{sku} has {product.reserved} reserved and {product.committed} committed "
                f"units; on_hand cannot go below {floor}",
                reserved=product.reserved,
                committed=product.committed,
                minimum_on_hand=floor,
            )
        previous, product.on_hand = product.on_hand, on_hand
    log.info(
        "stock set",
        extra={"sku": sku, "previous_on_hand": previous, "on_hand": on_hand, "actor": actor},
    )
    return product


async def list_reservations(
    *,
    sessions: async_sessionmaker[AsyncSession],
    sku: str,
    status: ReservationStatus | None,
    limit: int,
    offset: int,
) -> ReservationPage:
    """One SKU's reservations, newest first."""
    async with transaction(sessions) as session:
        if await repository.get_product(session, sku) is None:
            raise NotFoundError(f"product {sku} not found")
        reservations: list[Reservation] = list(
            await repository.list_reservations(
                session, sku, status=status, limit=limit, offset=offset
            )
        )
        total = await repository.count_reservations(session, sku, status=status)
    return ReservationPage(
        items=[ReservationRead.model_validate(r) for r in reservations],
        limit=limit,
        offset=offset,
        total=total,
    )
