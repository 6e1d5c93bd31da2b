import uuid

import pytest

from mercato_shared.events import (
    Envelope,
    OrderCreated,
    OrderLine,
    UnknownEventError,
    parse_payload,
)


def test_envelope_round_trip_and_payload_parse():
    order_id = uuid.uuid4()
    payload = OrderCreated(customer_id="alice", lines=[OrderLine(sku="MUG-BLUE", quantity=2)])
    envelope = Envelope.wrap(payload, order_id=order_id)
    assert envelope.type == "order.created"
    assert envelope.occurred_at.tzinfo is not None
    again = Envelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    assert parse_payload(again) == payload


def test_consumers_ignore_unknown_fields():
    envelope = Envelope.model_validate(
        {
            "id": str(uuid.uuid4()),
            "type": "order.created",
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00Z",
            "order_id": str(uuid.uuid4()),
            "payload": {"customer_id": "a", "lines": [], "gift_wrap": True},
            "added_later": 1,
        }
    )
    assert isinstance(parse_payload(envelope), OrderCreated)


def test_unknown_type_or_version_is_refused():
    base = Envelope.wrap(OrderCreated(customer_id="a", lines=[]), order_id=uuid.uuid4())
    with pytest.raises(UnknownEventError):
        parse_payload(base.model_copy(update={"version": 2}))
    with pytest.raises(UnknownEventError):
        parse_payload(base.model_copy(update={"type": "order.exploded"}))
