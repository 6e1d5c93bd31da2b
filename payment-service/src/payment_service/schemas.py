"""Response bodies of the payment API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class PaymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: uuid.UUID
    status: str
    amount: int
    refunded: int
    currency: str
    provider_ref: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
