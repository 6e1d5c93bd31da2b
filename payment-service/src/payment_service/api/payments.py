"""Routes under /api/v1/payments."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from mercato_shared.api import Sessions
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import problem_responses
from payment_service import service
from payment_service.schemas import PaymentRead

router = APIRouter(
    prefix="/api/v1/payments", tags=["payments"], responses=problem_responses(401, 422)
)


@router.get("/{order_id}", response_model=PaymentRead, responses=problem_responses(404))
async def read_payment(
    order_id: uuid.UUID, identity: CurrentIdentity, sessions: Sessions
) -> PaymentRead:
    """The payment of one of the caller's orders."""
    payment = await service.get_payment(sessions=sessions, identity=identity, order_id=order_id)
    return PaymentRead.model_validate(payment)
