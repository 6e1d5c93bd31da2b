"""All SQL of the payment service."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payment_service.models import Payment


async def get_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    return await session.get(Payment, order_id)


async def lock_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    """The order's payment, locked until the transaction ends (None if there is none)."""
    result = await session.execute(
        select(Payment)
        .where(Payment.order_id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def claim_payment(
    session: AsyncSession,
    *,
    order_id: uuid.UUID,
    customer_id: str,
    status: str,
    amount: int,
    currency: str | None,
) -> tuple[Payment, bool]:
    """Insert the order's payment unless it exists, and lock it; True if this call inserted it.

    ON CONFLICT DO NOTHING waits for a concurrent transaction that is inserting the same order
    and then yields to it, so two events of one order racing here are serialised, not failed.
    """
    # RETURNING the entity: a row this call inserts comes back as the locked Payment itself
    # (an inserted row stays locked until commit), with no select to read it back.
    inserted = await session.scalars(
        insert(Payment)
        .values(
            order_id=order_id,
            customer_id=customer_id,
            status=status,
            amount=amount,
            currency=currency,
        )
        .on_conflict_do_nothing(index_elements=[Payment.order_id])
        .returning(Payment)
    )
    payment = inserted.first()
    if payment is not None:
        return payment, True
    payment = await lock_payment(session, order_id)
    assert payment is not None  # noqa: S101 - it conflicted, so it exists; never deleted
    return payment, False
