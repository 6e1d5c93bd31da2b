"""Routes under /api/v1/products: the public catalogue, with ETags and Cache-Control."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from inventory_service import service
from inventory_service.schemas import ProductPage, ProductRead
from inventory_service.settings import InventorySettings
from mercato_shared.api import Limit, Offset, Sessions, Sku
from mercato_shared.http_cache import CACHEABLE_RESPONSES, cacheable_json
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/products", tags=["products"], responses=problem_responses(401, 422)
)


async def get_cache_control(request: Request) -> str:
    """The catalogue's Cache-Control, from the process's settings."""
    settings: InventorySettings = request.app.state.settings
    return settings.catalogue_cache_control


CacheControl = Annotated[str, Depends(get_cache_control)]
IfNoneMatch = Annotated[
    str | None,
    Header(
        # The gateway's limit for one header (GATEWAY_MAX_HEADER_BYTES).
        max_length=8192,
        description="ETags the client holds (or *): a 304 without a body if one is current",
    ),
]


@router.get("", response_model=ProductPage, responses=CACHEABLE_RESPONSES)
async def list_products(
    _: CurrentIdentity,
    sessions: Sessions,
    cache_control: CacheControl,
    limit: Limit = 50,
    offset: Offset = 0,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The catalogue with available stock, by SKU."""
    page = await service.list_products(sessions=sessions, limit=limit, offset=offset)
    return cacheable_json(page, if_none_match=if_none_match, cache_control=cache_control)


@router.get(
    "/{sku}",
    response_model=ProductRead,
    responses={**CACHEABLE_RESPONSES, **problem_responses(404)},
)
async def read_product(
    sku: Sku,
    _: CurrentIdentity,
    sessions: Sessions,
    cache_control: CacheControl,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One product with its available stock."""
    product = ProductRead.model_validate(await service.get_product(sessions=sessions, sku=sku))
    return cacheable_json(product, if_none_match=if_none_match, cache_control=cache_control)
