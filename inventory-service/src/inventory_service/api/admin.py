"""Admin routes under /api/v1/products: stock levels and reservations.

The gateway already limits these routes to admins; the service checks again, so that a
request that reaches it some other way (a misrouted call, a gateway misconfiguration) is
still refused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from inventory_service import service
from inventory_service.models import ReservationStatus
from inventory_service.schemas import ReservationPage, StockRead, StockUpdate
from mercato_shared.api import Limit, Offset, Sessions, Sku
from mercato_shared.identity import CurrentIdentity, Identity
from mercato_shared.problems import ForbiddenError, problem_responses


async def require_admin(identity: CurrentIdentity) -> Identity:
    """FastAPI dependency: the caller, who must be an admin (403 otherwise).

    Dependencies run before the body is validated, so a customer learns nothing from a 422.
    """
    if not identity.is_admin:
        raise ForbiddenError("this operation is for admins")
    return identity


AdminIdentity = Annotated[Identity, Depends(require_admin)]


router = APIRouter(
    prefix="/api/v1/products",
    tags=["stock (admin)"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.put("/{sku}/stock", response_model=StockRead, responses=problem_responses(400, 409))
async def set_stock(
    sku: Sku, body: StockUpdate, identity: AdminIdentity, sessions: Sessions
) -> StockRead:
    """Set the units on hand; 409 if that is fewer than are reserved and committed."""
    product = await service.set_stock(
        sessions=sessions, sku=sku, on_hand=body.on_hand, actor=identity.subject
    )
    return StockRead.model_validate(product)


@router.get("/{sku}/reservations", response_model=ReservationPage)
async def list_reservations(
    sku: Sku,
    _: AdminIdentity,
    sessions: Sessions,
    status: ReservationStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ReservationPage:
    """One product's reservations, newest first, optionally of one status."""
    return await service.list_reservations(
        sessions=sessions, sku=sku, status=status, limit=limit, offset=offset
    )
