"""Request and response bodies of the sandbox API; amounts are integer minor units."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Strict: a float or a numeric string is a client bug a processor would refuse, not coerce.
Amount = Annotated[int, Field(gt=0, strict=True, description="minor units (cents)")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255)]


class AuthorizationStatus(StrEnum):
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    CAPTURED = "captured"
    VOIDED = "voided"


class AuthorizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=100)
    amount: Amount
    currency: Currency


class AuthorizationRead(BaseModel):
    """An authorization as it stands now (a replay shows the current status)."""

    id: str
    idempotency_key: str
    order_id: str
    status: AuthorizationStatus
    amount: int
    currency: str
    decline_reason: str | None = None
    captured: int = 0
    refunded: int = 0
    created_at: datetime
    updated_at: datetime


class RefundCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount


class RefundRead(BaseModel):
    id: str
    idempotency_key: str
    authorization_id: str
    order_id: str
    amount: int
    currency: str
    created_at: datetime


class KeyVoidRead(BaseModel):
    """A voided idempotency key and the authorization made under it, if one was."""

    idempotency_key: str
    voided_at: datetime
    authorization: AuthorizationRead | None


class LedgerEntry(BaseModel):
    """What happened to one order's money; ``charged`` is what the customer paid net."""

    order_id: str
    currency: str | None
    authorization_count: int = Field(description="authorization records, declined ones included")
    declined_count: int
    authorized: int = Field(description="approved amount, whatever happened to it since")
    held: int = Field(description="approved, neither captured nor voided")
    captured: int
    voided: int
    refunded: int
    charged: int = Field(description="captured - refunded")


class OrderLedger(LedgerEntry):
    authorizations: list[AuthorizationRead]


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_after: str | None = Field(description="pass as ?after= for the next page")
