"""Request and response bodies of the inventory API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from inventory_service.models import ReservationStatus
from mercato_shared.api import Page, WholeNumber

# Stock columns are Postgres integers; a larger number must be a 422, not a database error.
MAX_STOCK = 2**31 - 1


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    unit_price: int
    currency: str
    available: int


class ProductPage(Page[ProductRead]):
    """A page of products."""


class StockUpdate(BaseModel):
    """The new count of units physically on hand (after a delivery or a stocktake)."""

    model_config = ConfigDict(extra="forbid")

    on_hand: WholeNumber = Field(ge=0, le=MAX_STOCK, examples=[120])


class StockRead(BaseModel):
    """A product's stock: on_hand = available + reserved + committed."""

    model_config = ConfigDict(from_attributes=True)

    sku: str
    on_hand: int
    reserved: int
    committed: int
    available: int


class ReservationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: uuid.UUID
    sku: str
    quantity: int
    unit_price: int = Field(description="minor units (cents), the catalogue's price when reserved")
    status: ReservationStatus
    created_at: datetime
    updated_at: datetime


class ReservationPage(Page[ReservationRead]):
    """A page of reservations."""
