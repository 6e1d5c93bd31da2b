"""Routes under /api/v1/payments."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from mercato_shared.api import Sessions
from mercato_shared.identity import CurrentIdentity
from payment_service import service
from payment_service.schemas import PaymentRead

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


@router.get("/{order_id}", response_model=PaymentRead)
async def read_payment(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions
) -> PaymentRead:
    """The payment of one of the caller's orders."""
    payment = await service.get_payment(sessions=sessions, identity=identity, order_id=order_id)
    return PaymentRead.model_validate(payment)
