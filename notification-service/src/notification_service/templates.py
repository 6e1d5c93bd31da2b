"""The words of each notification: subject and plain-text body per order outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from mercato_shared.events import CancelReason, OrderCancelled, OrderConfirmed

# ISO 4217 minor-unit exponents that are not 2; every other currency has cents.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

CANCEL_REASONS: dict[CancelReason, str] = {
    CancelReason.UNKNOWN_SKU: "One of the products in your order is not in our catalogue.",
    CancelReason.OUT_OF_STOCK: (
        "One of the products in your order is not in stock in the quantity you asked for."
    ),
    CancelReason.PAYMENT_DECLINED: "Your payment was declined.",
    CancelReason.PAYMENT_UNAVAILABLE: (
        "We could not reach the payment provider to authorize your payment."
    ),
    CancelReason.DEADLINE_EXCEEDED: "We could not complete your order in time.",
    CancelReason.CUSTOMER_CANCELLED: "You cancelled the order.",
}

_SIGNATURE = "\nThank you for shopping with Mercato.\n"


@dataclass(frozen=True)
class Text:
    subject: str
    body: str


def format_amount(amount: int, currency: str) -> str:
    """Minor units as a decimal amount with its currency: 123456, "EUR" → "1,234.56 EUR"."""
    code = currency.upper()
    exponent = _EXPONENTS.get(code, 2)
    value = Decimal(amount).scaleb(-exponent)
    return f"{value:,.{exponent}f} {code}"


def _reference(order_id: uuid.UUID) -> str:
    # The first block of the UUID is enough for a person to tell orders apart in a subject.
    return str(order_id).split("-", 1)[0]


def _letter(subject: str, message: str) -> Text:
    # Every notification greets, says its message, and signs off the same way.
    return Text(subject=subject, body=f"Hello,\n\n{message}\n{_SIGNATURE}")


def confirmed(order_id: uuid.UUID, event: OrderConfirmed) -> Text:
    return _letter(
        f"Your order {_reference(order_id)} is confirmed",
        f"your order {order_id} is confirmed and paid: "
        f"{format_amount(event.amount, event.currency)}.",
    )


def cancelled(order_id: uuid.UUID, event: OrderCancelled) -> Text:
    return _letter(
        f"Your order {_reference(order_id)} is cancelled",
        f"your order {order_id} is cancelled. {CANCEL_REASONS[event.reason]}\n"
        "Any amount reserved on your card for it is released; you are not charged.",
    )
