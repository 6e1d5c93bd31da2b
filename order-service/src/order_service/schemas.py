"""Request and response bodies of the order API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from mercato_shared.api import Page, Sku, WholeNumber

# What the address check refuses beyond RFC 5321's syntax, said in the schema: a local part of
# at most 64 characters, 254 in all, and no special-use domain (RFC 6761), where no mail goes.
# The pattern documents; email_validator (behind EmailStr) is what checks.
Email = Annotated[
    EmailStr,
    Field(
        json_schema_extra={
            "maxLength": 254,
            "pattern": r"^[^@]{1,64}@(?!(?:.*\.)?(?:arpa|invalid|local|localhost|onion|test)$)",
        }
    ),
]


class OrderLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: WholeNumber = Field(gt=0, le=1000)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[OrderLineCreate] = Field(
        min_length=1, max_length=100, description="lines of one SKU are added up into one"
    )
    email: Email | None = Field(default=None, description="where the outcome is mailed")

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[OrderLineCreate]) -> list[OrderLineCreate]:
        # The saga reserves stock per SKU. A total may pass a line's 1000: it is still bounded
        # by 100 lines of 1000.
        totals: dict[str, int] = {}
        for line in lines:
            totals[line.sku] = totals.get(line.sku, 0) + line.quantity
        if len(totals) == len(lines):
            return lines
        return [OrderLineCreate.model_construct(sku=sku, quantity=n) for sku, n in totals.items()]


class OrderLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int


class HistoryEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    step: str
    reason: str | None
    at: datetime


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    customer_id: str
    status: str
    cancel_reason: str | None
    amount: int | None = Field(description="minor units; known once stock is reserved")
    currency: str | None
    lines: list[OrderLineRead]
    history: list[HistoryEntry]
    deadline_at: datetime
    created_at: datetime
    updated_at: datetime


class OrderPage(Page[OrderRead]):
    """A page of orders."""
