"""All SQL of the payment service."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.outbox import OUTBOX_INSERT
from mercato_shared.sql import Sql
from payment_service.models import Payment


async def get_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    return await session.get(Payment, order_id)


# The saga's statements run on the driver (mercato_shared.sql): they are its hot path.

_COLUMNS = (
    "order_id, customer_id, status, amount, captured, refunded, currency, provider_ref,"
    " idempotency_key, key_voided, failure_reason"
)

_LOCK = Sql(f"SELECT {_COLUMNS} FROM payments WHERE order_id = CAST(:order_id AS uuid) FOR UPDATE")  # noqa: S608 - constant SQL

# ON CONFLICT DO NOTHING waits for a concurrent transaction that is inserting the same order
# and then yields to it, so two events of one order racing here are serialised, not failed.
# A row this statement inserts comes back, and stays locked until commit.
_CLAIM = Sql(
    "INSERT INTO payments (order_id, customer_id, status, amount, currency, idempotency_key)"  # noqa: S608 - constant SQL
    " VALUES (CAST(:order_id AS uuid), CAST(:customer_id AS text), CAST(:status AS text),"
    " CAST(:amount AS integer), CAST(:currency AS text), CAST(:idempotency_key AS text))"
    f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}"
)

_SAVE = (
    "UPDATE payments SET status = CAST(:status AS text), captured = CAST(:captured AS integer),"
    " refunded = CAST(:refunded AS integer), provider_ref = CAST(:provider_ref AS text),"
    " key_voided = CAST(:key_voided AS boolean), failure_reason = CAST(:failure_reason AS text),"
    " updated_at = now() WHERE order_id = CAST(:order_id AS uuid)"
)
_SAVE_ONLY = Sql(_SAVE)
# The payment's new state and the event that announces it, in one statement.
_SAVE_AND_EMIT = Sql(f"WITH saved AS ({_SAVE}) {OUTBOX_INSERT}")


@dataclass(slots=True)
class PaymentState:
    """A payment row as the saga changes it: read locked, changed, then saved."""

    order_id: uuid.UUID
    customer_id: str
    status: str
    amount: int
    captured: int
    refunded: int
    currency: str | None
    provider_ref: str | None
    idempotency_key: str | None
    key_voided: bool
    failure_reason: str | None


def _state(row: Any) -> PaymentState:
    return PaymentState(**dict(row.items()))


async def lock_payment(session: AsyncSession, order_id: uuid.UUID) -> PaymentState | None:
    """The order's payment, locked until the transaction ends (None if there is none)."""
    row = await _LOCK.fetchrow(session, order_id=order_id)
    return None if row is None else _state(row)


async def claim_payment(
    session: AsyncSession,
    *,
    order_id: uuid.UUID,
    customer_id: str,
    status: str,
    amount: int,
    currency: str | None,
    idempotency_key: str | None = None,
) -> tuple[PaymentState, bool]:
    """Insert the order's payment unless it exists, and lock it; True if this call inserted it."""
    row = await _CLAIM.fetchrow(
        session,
        order_id=order_id,
        customer_id=customer_id,
        status=status,
        amount=amount,
        currency=currency,
        idempotency_key=idempotency_key,
    )
    if row is not None:
        return _state(row), True
    payment = await lock_payment(session, order_id)
    assert payment is not None  # noqa: S101 - it conflicted, so it exists; never deleted
    return payment, False


async def save(
    session: AsyncSession, payment: PaymentState, *, event: Mapping[str, Any] | None = None
) -> None:
    """Write the payment's changed state, with its outbox row (``outbox_row``'s values)."""
    values = {
        "order_id": payment.order_id,
        "status": payment.status,
        "captured": payment.captured,
        "refunded": payment.refunded,
        "provider_ref": payment.provider_ref,
        "key_voided": payment.key_voided,
        "failure_reason": payment.failure_reason,
    }
    if event is None:
        await _SAVE_ONLY.execute(session, **values)
    else:
        await _SAVE_AND_EMIT.execute(session, **values, **event)
