"""Routes under /api/v1/orders."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from mercato_shared.api import Autocommit, CustomerFilter, Limit, Offset, Sessions
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import problem_responses
from order_service import service
from order_service.schemas import OrderCreate, OrderPage, OrderRead
from order_service.settings import OrderSettings


async def get_settings(request: Request) -> OrderSettings:
    settings: OrderSettings = request.app.state.settings
    return settings


Settings = Annotated[OrderSettings, Depends(get_settings)]

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], responses=problem_responses(401, 422))

# 1 to 255 printable ASCII characters, not starting or ending with a space (HTTP would strip it).
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[!-~](?:[ -~]*[!-~])?$",
        description=(
            "makes the request safe to retry: the same key and body give the first order "
            "again (200, Idempotent-Replayed: true); the same key with another body is a 422; "
            "while the first request with the key is still in progress, a 409"
        ),
        examples=["checkout-2f1c9a"],
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    responses={
        200: {
            "description": "replay of an earlier request with the same key",
            "model": OrderRead,
            "headers": {
                "Idempotent-Replayed": {
                    "description": "the order of the key's first request",
                    "schema": {"type": "string", "const": "true"},
                }
            },
        },
        **problem_responses(400, 409),
    },
)
async def create_order(
    body: OrderCreate,
    identity: CurrentIdentity,
    autocommit: Autocommit,
    sessions: Sessions,
    settings: Settings,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> OrderRead:
    """Place an order; it starts PENDING and the saga takes it from there."""
    order, replayed = await service.place_order(
        autocommit=autocommit,
        sessions=sessions,
        settings=settings,
        identity=identity,
        request=body,
        idempotency_key=idempotency_key,
    )
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return order


@router.get("", response_model=OrderPage)
async def list_orders(
    identity: CurrentIdentity,
    sessions: Sessions,
    customer_id: CustomerFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> OrderPage:
    """The caller's orders, newest first."""
    return await service.list_orders(
        sessions=sessions, identity=identity, customer_id=customer_id, limit=limit, offset=offset
    )


@router.get("/{order_id}", response_model=OrderRead, responses=problem_responses(404))
async def read_order(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions
) -> OrderRead:
    """One of the caller's orders (admins: any order), with its status history."""
    order = await service.get_order(sessions=sessions, identity=identity, order_id=order_id)
    return OrderRead.model_validate(order)


@router.post("/{order_id}/cancel", response_model=OrderRead, responses=problem_responses(404, 409))
async def cancel_order(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions, settings: Settings
) -> OrderRead:
    """Cancel an order that has not reached CONFIRMED or CANCELLED yet (409 otherwise)."""
    order = await service.cancel_order(
        sessions=sessions, settings=settings, identity=identity, order_id=order_id
    )
    return OrderRead.model_validate(order)
