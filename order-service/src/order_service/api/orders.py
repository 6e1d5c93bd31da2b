"""Routes under /api/v1/orders."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from mercato_shared.api import Sessions
from mercato_shared.identity import CurrentIdentity
from order_service import service
from order_service.schemas import OrderCreate, OrderRead
from order_service.settings import OrderSettings


def get_settings(request: Request) -> OrderSettings:
    settings: OrderSettings = request.app.state.settings
    return settings


Settings = Annotated[OrderSettings, Depends(get_settings)]

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])


@router.post("", status_code=201, response_model=OrderRead)
async def create_order(
    body: OrderCreate, identity: CurrentIdentity, sessions: Sessions, settings: Settings
) -> OrderRead:
    """Place an order; it starts PENDING and the saga takes it from there."""
    order = await service.place_order(
        sessions=sessions, settings=settings, identity=identity, request=body
    )
    return OrderRead.model_validate(order)


@router.get("/{order_id}", response_model=OrderRead)
async def read_order(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions
) -> OrderRead:
    """One of the caller's orders (admins: any order)."""
    order = await service.get_order(sessions=sessions, identity=identity, order_id=order_id)
    return OrderRead.model_validate(order)
