"""Routes under /api/v1/orders."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from mercato_shared.api import Autocommit, Limit, Offset, Sessions
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import BadRequestError
from order_service import service
from order_service.schemas import OrderCreate, OrderPage, OrderRead
from order_service.settings import OrderSettings


async def get_settings(request: Request) -> OrderSettings:
    settings: OrderSettings = request.app.state.settings
    return settings


Settings = Annotated[OrderSettings, Depends(get_settings)]

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])


def _checked_key(key: str | None) -> str | None:
    if key is not None and not (1 <= len(key) <= 255 and key.isascii() and key.isprintable()):
        raise BadRequestError("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


@router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    responses={200: {"description": "replay of an earlier request with the same key"}},
)
async def create_order(
    body: OrderCreate,
    identity: CurrentIdentity,
    autocommit: Autocommit,
    sessions: Sessions,
    settings: Settings,
    response: Response,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> OrderRead:
    """Place an order; it starts PENDING and the saga takes it from there."""
    order, replayed = await service.place_order(
        autocommit=autocommit,
        sessions=sessions,
        settings=settings,
        identity=identity,
        request=body,
        idempotency_key=_checked_key(idempotency_key),
    )
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return order


@router.get("", response_model=OrderPage)
async def list_orders(
    identity: CurrentIdentity,
    sessions: Sessions,
    customer_id: Annotated[str | None, Query(description="admins only: one customer's")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> OrderPage:
    """The caller's orders, newest first."""
    return await service.list_orders(
        sessions=sessions, identity=identity, customer_id=customer_id, limit=limit, offset=offset
    )


@router.get("/{order_id}", response_model=OrderRead)
async def read_order(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions
) -> OrderRead:
    """One of the caller's orders (admins: any order), with its status history."""
    order = await service.get_order(sessions=sessions, identity=identity, order_id=order_id)
    return OrderRead.model_validate(order)


@router.post("/{order_id}/cancel", response_model=OrderRead)
async def cancel_order(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions, settings: Settings
) -> OrderRead:
    """Cancel an order that has not reached CONFIRMED or CANCELLED yet (409 otherwise)."""
    order = await service.cancel_order(
        sessions=sessions, settings=settings, identity=identity, order_id=order_id
    )
    return OrderRead.model_validate(order)
