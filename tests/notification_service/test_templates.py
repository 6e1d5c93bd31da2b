"""The words of the notifications."""

import uuid

import pytest

from mercato_shared.events import CancelReason, OrderCancelled, OrderConfirmed
from notification_service import templates


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (123456, "EUR", "1,234.56 EUR"),
        (5, "usd", "0.05 USD"),
        (0, "EUR", "0.00 EUR"),
        (1500, "JPY", "1,500 JPY"),
        (12345, "KWD", "12.345 KWD"),
    ],
)
def test_amounts_are_formatted_from_minor_units(amount, currency, text):
    assert templates.format_amount(amount, currency) == text


def test_every_cancel_reason_has_its_sentence():
    assert set(templates.CANCEL_REASONS) == set(CancelReason)
    assert len(set(templates.CANCEL_REASONS.values())) == len(CancelReason)


def test_subjects_name_the_order_and_its_outcome():
    order_id = uuid.UUID("1a2b3c4d-0000-4000-8000-000000000000")
    yes = templates.confirmed(order_id, OrderConfirmed(customer_id="a", amount=100, currency="EUR"))
    no = templates.cancelled(
        order_id, OrderCancelled(customer_id="a", reason=CancelReason.PAYMENT_DECLINED)
    )
    assert yes.subject == "Your order 1a2b3c4d is confirmed"
    assert no.subject == "Your order 1a2b3c4d is cancelled"
    assert str(order_id) in yes.body
    assert "1.00 EUR" in yes.body
    assert "Your payment was declined." in no.body


def test_both_outcomes_greet_and_sign_off_alike():
    order_id = uuid.uuid4()
    yes = templates.confirmed(order_id, OrderConfirmed(customer_id="a", amount=100, currency="EUR"))
    no = templates.cancelled(
        order_id, OrderCancelled(customer_id="a", reason=CancelReason.OUT_OF_STOCK)
    )
    for text in (yes, no):
        assert text.body.startswith("Hello,\n\nyour order ")
        assert text.body.endswith("\n\nThank you for shopping with Mercato.\n")
