"""Routes under /api/v1/products."""

from __future__ import annotations

from fastapi import APIRouter

from inventory_service import service
from inventory_service.schemas import ProductPage, ProductRead
from mercato_shared.api import Limit, Offset, Sessions, Sku
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/products", tags=["products"], responses=problem_responses(401, 422)
)


@router.get("", response_model=ProductPage)
async def list_products(
    _: CurrentIdentity,
    sessions: Sessions,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ProductPage:
    """The catalogue with available stock, by SKU."""
    return await service.list_products(sessions=sessions, limit=limit, offset=offset)


@router.get("/{sku}", response_model=ProductRead, responses=problem_responses(404))
async def read_product(sku: Sku, _: CurrentIdentity, sessions: Sessions) -> ProductRead:
    """One product with its available stock."""
    return ProductRead.model_validate(await service.get_product(sessions=sessions, sku=sku))
