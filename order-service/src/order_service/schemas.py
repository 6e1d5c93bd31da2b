"""Request and response bodies of the order API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from mercato_shared.api import Page, Sku


class OrderLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: int = Field(strict=True, gt=0, le=1000)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[OrderLineCreate] = Field(min_length=1, max_length=100)
    email: EmailStr | None = Field(default=None, description="where the outcome is mailed")

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[OrderLineCreate]) -> list[OrderLineCreate]:
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each SKU may appear on one line only")
        return lines


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
