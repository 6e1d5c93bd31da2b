"""The event envelope and the catalogue of event payloads that services exchange over Kafka.

Schema evolution: adding an optional field keeps the version; consumers ignore fields they do
not know (``extra="ignore"``); a breaking change is a new ``version`` of the type.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    """Base of every event payload; subclasses name their type, version and logical topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1
    topic: ClassVar[str]


class Envelope(BaseModel):
    """What travels on the wire: metadata plus the payload as a JSON object."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    type: str
    version: int = 1
    occurred_at: datetime
    order_id: uuid.UUID
    payload: dict[str, Any]

    @classmethod
    def wrap(cls, payload: Payload, *, order_id: uuid.UUID) -> Envelope:
        """Build the envelope of a new event about one order."""
        return cls(
            id=uuid.uuid4(),
            type=payload.event_type,
            version=payload.event_version,
            occurred_at=datetime.now(UTC),
            order_id=order_id,
            payload=payload.model_dump(mode="json"),
        )


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: str
    quantity: int = Field(gt=0)


class PricedLine(OrderLine):
    unit_price: int = Field(ge=0, description="minor units (cents)")


class CancelReason(StrEnum):
    UNKNOWN_SKU = "unknown_sku"
    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_UNAVAILABLE = "payment_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CUSTOMER_CANCELLED = "customer_cancelled"


class RejectReason(StrEnum):
    UNKNOWN_SKU = "unknown_sku"
    OUT_OF_STOCK = "out_of_stock"


class PaymentFailure(StrEnum):
    DECLINED = "declined"
    PROVIDER_UNAVAILABLE = "provider_unavailable"


class OrderCreated(Payload):
    """A customer placed an order (PENDING); inventory reserves it next."""

    event_type: ClassVar[str] = "order.created"
    topic: ClassVar[str] = "orders"

    customer_id: str
    email: str | None = None
    lines: list[OrderLine]


class OrderConfirmed(Payload):
    """Terminal: paid and reserved. Inventory commits the stock, payment captures."""

    event_type: ClassVar[str] = "order.confirmed"
    topic: ClassVar[str] = "orders"

    customer_id: str
    email: str | None = None
    amount: int = Field(ge=0)
    currency: str


class OrderCancelled(Payload):
    """Terminal: inventory releases any reservation, payment voids or refunds."""

    event_type: ClassVar[str] = "order.cancelled"
    topic: ClassVar[str] = "orders"

    customer_id: str
    email: str | None = None
    reason: CancelReason


class InventoryReserved(Payload):
    """Every line is reserved; the prices are the catalogue's at reservation time."""

    event_type: ClassVar[str] = "inventory.reserved"
    topic: ClassVar[str] = "inventory"

    customer_id: str
    lines: list[PricedLine]
    amount: int = Field(ge=0)
    currency: str


class InventoryRejected(Payload):
    """Nothing is reserved: a SKU is unknown or short."""

    event_type: ClassVar[str] = "inventory.rejected"
    topic: ClassVar[str] = "inventory"

    reason: RejectReason
    skus: list[str]


class PaymentAuthorized(Payload):
    event_type: ClassVar[str] = "payment.authorized"
    topic: ClassVar[str] = "payments"

    amount: int = Field(ge=0)
    currency: str
    authorization_id: str


class PaymentFailed(Payload):
    event_type: ClassVar[str] = "payment.failed"
    topic: ClassVar[str] = "payments"

    reason: PaymentFailure
    detail: str = ""


# The logical topics (docs/architecture.md); deployments may prefix them
# (ServiceSettings.kafka_prefix).
TOPICS: tuple[str, ...] = ("orders", "inventory", "payments")

CATALOGUE: dict[tuple[str, int], type[Payload]] = {
    (model.event_type, model.event_version): model
    for model in (
        OrderCreated,
        OrderConfirmed,
        OrderCancelled,
        InventoryReserved,
        InventoryRejected,
        PaymentAuthorized,
        PaymentFailed,
    )
}


P = TypeVar("P", bound=Payload)


class UnknownEventError(LookupError):
    """An envelope names a type/version this library does not know."""


def parse_payload(envelope: Envelope) -> Payload:
    """Validate an envelope's payload against the catalogue model of its type and version."""
    model = CATALOGUE.get((envelope.type, envelope.version))
    if model is None:
        raise UnknownEventError(f"{envelope.type} v{envelope.version}")
    return model.model_validate(envelope.payload)


def payload_as(envelope: Envelope, model: type[P]) -> P:
    """The envelope's payload as ``model``; raises if the envelope is of another type."""
    payload = parse_payload(envelope)
    if not isinstance(payload, model):
        raise UnknownEventError(f"{envelope.type} is not {model.event_type}")
    return payload
