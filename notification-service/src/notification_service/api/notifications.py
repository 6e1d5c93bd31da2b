"""Routes under /api/v1/notifications."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from mercato_shared.api import CustomerFilter, Limit, Offset, Sessions
from mercato_shared.identity import CurrentIdentity
from mercato_shared.problems import problem_responses
from notification_service import service
from notification_service.schemas import NotificationPage

router = APIRouter(
    prefix="/api/v1/notifications", tags=["notifications"], responses=problem_responses(401, 422)
)


@router.get("", response_model=NotificationPage)
async def list_notifications(
    identity: CurrentIdentity,
    sessions: Sessions,
    customer_id: CustomerFilter = None,
    order_id: Annotated[uuid.UUID | None, Query(description="one order's notification")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> NotificationPage:
    """The caller's notifications, newest first."""
    return await service.list_notifications(
        sessions=sessions,
        identity=identity,
        customer_id=customer_id,
        order_id=order_id,
        limit=limit,
        offset=offset,
    )
