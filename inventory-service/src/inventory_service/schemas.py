"""Response bodies of the inventory API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    unit_price: int
    currency: str
    available: int


class ProductPage(BaseModel):
    items: list[ProductRead]
    limit: int
    offset: int
    total: int
