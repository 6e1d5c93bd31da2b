"""The event envelope and the catalogue of event payloads that services exchange over Kafka.

Schema evolution: adding an optional field keeps the version; consumers ignore fields they do
not know (``extra="ignore"``); a breaking change is a new ``version`` of the type.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

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


class OrderCreated(Payload):
    event_type: ClassVar[str] = "order.created"
    topic: ClassVar[str] = "orders"

    customer_id: str
    lines: list[OrderLine]


# Logical topics of DESIGN.md; deployments may prefix them (ServiceSettings.kafka_prefix).
TOPICS: tuple[str, ...] = ("orders", "inventory", "payments")

CATALOGUE: dict[tuple[str, int], type[Payload]] = {
    (model.event_type, model.event_version): model for model in (OrderCreated,)
}


class UnknownEventError(LookupError):
    """An envelope names a type/version this library does not know."""


def parse_payload(envelope: Envelope) -> Payload:
    """Validate an envelope's payload against the catalogue model of its type and version."""
    model = CATALOGUE.get((envelope.type, envelope.version))
    if model is None:
        raise UnknownEventError(f"{envelope.type} v{envelope.version}")
    return model.model_validate(envelope.payload)
