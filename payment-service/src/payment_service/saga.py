"""The payment steps of the order saga: authorize on a reservation, capture on confirmation,
void or refund on cancellation.

Each step runs in the consumer's transaction, with the event's inbox row, and first locks the
order's payments row (inserting it when there is none), so two events of one order handled at
once by two workers apply one after the other. The processor is called while the lock is held:
a second event of the order waits for the first one's outcome instead of racing it.

The worker runs the steps of a batch's different orders at once (``concurrency``), so that
their processor calls overlap: each step takes the session's turn (``serial``) for its
statements and its changes to the payment, and lets it go while it waits on the processor.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mercato_shared.db import serial
from mercato_shared.events import (
    Envelope,
    InventoryReserved,
    OrderCancelled,
    OrderConfirmed,
    Payload,
    PaymentAuthorized,
    PaymentFailed,
    PaymentFailure,
    payload_as,
)
from mercato_shared.outbox import outbox_row
from payment_service import repository
from payment_service.models import PaymentStatus
from payment_service.repository import PaymentState
from payment_service.sandbox import (
    ProviderRejectedError,
    ProviderUnavailableError,
    SandboxAuthorization,
    SandboxClient,
)
from payment_service.settings import PaymentSettings

log = logging.getLogger(__name__)

# The processor's decline reason for an authorization under a key that was given up on.
KEY_VOIDED_REASON = "idempotency_key_voided"


def authorization_key(order_id: uuid.UUID) -> str:
    """The one idempotency key of an order's authorization: every retry reuses it."""
    return f"auth-{order_id}"


def refund_key(order_id: uuid.UUID) -> str:
    return f"refund-{order_id}"


@dataclass(frozen=True)
class PaymentSaga:
    settings: PaymentSettings
    sandbox: SandboxClient

    async def on_inventory_reserved(self, session: AsyncSession, envelope: Envelope) -> None:
        """Authorize the reserved amount, unless the order is already known to be cancelled."""
        event = payload_as(envelope, InventoryReserved)
        order_id = envelope.order_id
        key = authorization_key(order_id)
        async with serial(session):
            payment, created = await repository.claim_payment(
                session,
                order_id=order_id,
                customer_id=event.customer_id,
                status=PaymentStatus.AUTHORIZING,
                amount=event.amount,
                currency=event.currency,
                idempotency_key=key,
            )
            if not created:
                # Cancelled before the reservation arrived, or a reservation already handled.
                log.info("reservation ignored", extra=_context(payment))
                return
            if event.amount == 0:
                # Nothing to hold: an order of free items needs no processor.
                await self._authorized(session, payment, authorization_id=None)
                return
        try:
            auth = await self.sandbox.authorize(
                key=key, order_id=str(order_id), amount=event.amount, currency=event.currency
            )
        except ProviderUnavailableError as exc:
            log.warning("authorization given up: %s", exc, extra=_context(payment))
            voided = await self._void_key(key)
            async with serial(session):
                payment.key_voided = voided
                await self._failed(session, payment, PaymentFailure.PROVIDER_UNAVAILABLE, str(exc))
            return
        async with serial(session):
            await self._settle(session, payment, auth)

    async def on_order_confirmed(self, session: AsyncSession, envelope: Envelope) -> None:
        """Capture the authorization of a confirmed order."""
        event = payload_as(envelope, OrderConfirmed)
        async with serial(session):
            payment = await repository.lock_payment(session, envelope.order_id)
        if payment is None or payment.status != PaymentStatus.AUTHORIZED:
            if payment is None or payment.status != PaymentStatus.CAPTURED:
                log.error(
                    "order confirmed without an authorized payment",
                    extra={"order_id": str(envelope.order_id), **_context(payment)},
                )
            return
        if event.amount != payment.amount:
            log.warning("confirmed amount %d differs", event.amount, extra=_context(payment))
        captured = payment.amount
        if payment.provider_ref is not None:
            # Provider trouble raises ProviderUnavailableError: the event is retried, not lost.
            captured = (await self.sandbox.capture(payment.provider_ref)).captured
        async with serial(session):
            payment.status = PaymentStatus.CAPTURED
            payment.captured = captured
            await repository.save(session, payment)

    async def on_order_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        """Release what the order holds: void an authorization, refund a capture."""
        event = payload_as(envelope, OrderCancelled)
        async with serial(session):
            payment, created = await repository.claim_payment(
                session,
                order_id=envelope.order_id,
                customer_id=event.customer_id,
                status=PaymentStatus.CANCELLED,
                amount=0,
                currency=None,
            )
        if created:
            # The marker a late reservation finds: payment never authorizes a cancelled order.
            log.info("cancellation recorded before any authorization", extra=_context(payment))
            return
        # Provider trouble below raises ProviderUnavailableError: the event is retried. The
        # payment row stays locked meanwhile; only its changes wait for the session's turn.
        status = payment.status
        if status == PaymentStatus.AUTHORIZED:
            if payment.provider_ref is not None:
                await self.sandbox.void(payment.provider_ref)
            changes: dict[str, object] = {"status": PaymentStatus.VOIDED}
        elif status == PaymentStatus.CAPTURED:
            remaining = payment.captured - payment.refunded
            if remaining and payment.provider_ref is not None:
                await self.sandbox.refund(
                    payment.provider_ref, key=refund_key(payment.order_id), amount=remaining
                )
            changes = {"status": PaymentStatus.REFUNDED, "refunded": payment.captured}
        elif status == PaymentStatus.FAILED and _needs_key_void(payment):
            assert payment.idempotency_key is not None  # noqa: S101 - checked by _needs_key_void
            await self.sandbox.void_key(payment.idempotency_key)
            changes = {"key_voided": True}
        else:
            return
        async with serial(session):
            for name, value in changes.items():
                setattr(payment, name, value)
            await repository.save(session, payment)
        log.info("payment compensated: %s -> %s", status, payment.status, extra=_context(payment))

    async def _settle(
        self, session: AsyncSession, payment: PaymentState, auth: SandboxAuthorization
    ) -> None:
        payment.provider_ref = auth.id
        if auth.status in ("authorized", "captured"):
            await self._authorized(session, payment, authorization_id=auth.id)
        elif auth.status == "voided" or auth.decline_reason == KEY_VOIDED_REASON:
            # An earlier attempt gave up on this key and its transaction then rolled back.
            payment.key_voided = True
            await self._failed(
                session, payment, PaymentFailure.PROVIDER_UNAVAILABLE, "authorization voided"
            )
        else:
            await self._failed(
                session, payment, PaymentFailure.DECLINED, auth.decline_reason or "declined"
            )

    async def _authorized(
        self, session: AsyncSession, payment: PaymentState, *, authorization_id: str | None
    ) -> None:
        payment.status = PaymentStatus.AUTHORIZED
        assert payment.currency is not None  # noqa: S101 - set from the reservation
        event = PaymentAuthorized(
            amount=payment.amount,
            currency=payment.currency,
            authorization_id=authorization_id or "",
        )
        await self._emit(session, payment, event)

    async def _failed(
        self, session: AsyncSession, payment: PaymentState, reason: PaymentFailure, detail: str
    ) -> None:
        payment.status = PaymentStatus.FAILED
        payment.failure_reason = reason
        await self._emit(session, payment, PaymentFailed(reason=reason, detail=detail[:500]))

    async def _void_key(self, key: str) -> bool:
        """Best effort: if the processor cannot be reached, the order's cancellation retries."""
        try:
            await self.sandbox.void_key(key)
        except (ProviderUnavailableError, ProviderRejectedError) as exc:
            log.error("could not void %s yet; its cancellation will: %s", key, exc)
            return False
        return True

    async def _emit(self, session: AsyncSession, payment: PaymentState, event: Payload) -> None:
        """Save the payment's new state with the event that announces it."""
        topic = self.settings.topic(event.topic)
        _, row = outbox_row(event, order_id=payment.order_id, topic=topic)
        await repository.save(session, payment, event=row)


def _needs_key_void(payment: PaymentState) -> bool:
    return (
        payment.failure_reason == PaymentFailure.PROVIDER_UNAVAILABLE
        and not payment.key_voided
        and payment.idempotency_key is not None
    )


def _context(payment: PaymentState | None) -> dict[str, str]:
    if payment is None:
        return {}
    return {"order_id": str(payment.order_id), "payment_status": payment.status}
