"""Response bodies of the payment API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field


class PaymentRead(BaseModel):
    """An order's payment; amounts in minor units."""

    model_config = ConfigDict(from_attributes=True)

    order_id: uuid.UUID
    status: str
    amount: int
    captured: int
    refunded: int
    currency: str | None
    provider_ref: str | None = Field(description="the card processor's authorization id")
    idempotency_key: str | None = Field(description="the authorization's key at the processor")
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def charged(self) -> int:
        """What the customer paid, net of refunds."""
        return self.captured - self.refunded
