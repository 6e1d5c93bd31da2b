"""payment's steps of the saga against a real sandbox and a real, migrated payment database."""

import asyncio
import uuid

from mercato_shared.events import PaymentAuthorized, PaymentFailed, PaymentFailure, payload_as
from payment_service.models import PaymentStatus
from tests.infra import eventually
from tests.payment_service.support import cancelled, confirmed, reserved


async def test_reservation_authorizes_and_confirmation_captures(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id, amount=4200))

    payment = await saga.payment(order_id)
    assert payment.status == PaymentStatus.AUTHORIZED
    assert (payment.amount, payment.currency, payment.customer_id) == (4200, "EUR", "alice")
    assert payment.idempotency_key == f"auth-{order_id}"
    [event] = await saga.events(order_id)
    authorized = payload_as(event, PaymentAuthorized)
    assert (authorized.amount, authorized.currency) == (4200, "EUR")
    assert authorized.authorization_id == payment.provider_ref
    ledger = await sandbox.ledger(order_id)
    assert (ledger["held"], ledger["charged"]) == (4200, 0)
    assert ledger["authorizations"][0]["id"] == payment.provider_ref

    await saga.deliver(confirmed(order_id, amount=4200))
    payment = await saga.payment(order_id)
    assert (payment.status, payment.captured) == (PaymentStatus.CAPTURED, 4200)
    ledger = await sandbox.ledger(order_id)
    assert (ledger["held"], ledger["captured"], ledger["charged"]) == (0, 4200, 4200)
    assert len(await saga.events(order_id)) == 1  # capturing announces nothing


async def test_a_declined_authorization_fails_the_payment(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id, amount=100_001))

    payment = await saga.payment(order_id)
    assert (payment.status, payment.failure_reason) == (PaymentStatus.FAILED, "declined")
    [event] = await saga.events(order_id)
    failed = payload_as(event, PaymentFailed)
    assert failed.reason is PaymentFailure.DECLINED
    assert failed.detail == "amount_over_limit"
    ledger = await sandbox.ledger(order_id)
    assert (ledger["declined_count"], ledger["authorized"], ledger["charged"]) == (1, 0, 0)

    # The order's cancellation that follows has nothing to release.
    await saga.deliver(cancelled(order_id))
    assert (await saga.payment(order_id)).status == PaymentStatus.FAILED
    assert (await sandbox.ledger(order_id))["authorization_count"] == 1


async def test_cancelled_before_the_reservation_never_authorizes(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(cancelled(order_id, customer="bob"))
    marker = await saga.payment(order_id)
    assert (marker.status, marker.customer_id, marker.amount) == (
        PaymentStatus.CANCELLED,
        "bob",
        0,
    )

    await saga.deliver(reserved(order_id, customer="bob"))
    assert (await saga.payment(order_id)).status == PaymentStatus.CANCELLED
    assert await saga.events(order_id) == []
    assert (await sandbox.ledger(order_id))["authorization_count"] == 0


async def test_cancelled_after_authorization_voids(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id))
    await saga.deliver(cancelled(order_id))

    assert (await saga.payment(order_id)).status == PaymentStatus.VOIDED
    ledger = await sandbox.ledger(order_id)
    assert (ledger["authorized"], ledger["voided"], ledger["held"], ledger["charged"]) == (
        2500,
        2500,
        0,
        0,
    )


async def test_cancelled_after_capture_refunds(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id))
    await saga.deliver(confirmed(order_id))
    await saga.deliver(cancelled(order_id))

    payment = await saga.payment(order_id)
    assert (payment.status, payment.captured, payment.refunded) == (
        PaymentStatus.REFUNDED,
        2500,
        2500,
    )
    ledger = await sandbox.ledger(order_id)
    assert (ledger["captured"], ledger["refunded"], ledger["charged"]) == (2500, 2500, 0)


async def test_redelivered_and_repeated_events_are_harmless(saga, sandbox):
    order_id = uuid.uuid4()
    reservation = reserved(order_id)
    for envelope in (reservation, reservation, reserved(order_id)):
        await saga.deliver(envelope)
    confirmation = confirmed(order_id)
    for envelope in (confirmation, confirmed(order_id)):
        await saga.deliver(envelope)
    for envelope in (cancelled(order_id), cancelled(order_id)):
        await saga.deliver(envelope)

    ledger = await sandbox.ledger(order_id)
    assert ledger["authorization_count"] == 1
    assert (ledger["captured"], ledger["refunded"]) == (2500, 2500)
    assert [event.type for event in await saga.events(order_id)] == ["payment.authorized"]
    assert (await saga.payment(order_id)).status == PaymentStatus.REFUNDED


async def test_a_free_order_is_authorized_without_the_processor(saga, sandbox):
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id, amount=0))
    [event] = await saga.events(order_id)
    assert payload_as(event, PaymentAuthorized).amount == 0
    await saga.deliver(confirmed(order_id, amount=0))
    assert (await saga.payment(order_id)).status == PaymentStatus.CAPTURED
    assert (await sandbox.ledger(order_id))["authorization_count"] == 0


async def test_a_cancellation_during_the_authorization_waits_for_it_then_voids(saga, sandbox):
    # Answers come 0.2 s after the authorization is made, within the client's timeout.
    await sandbox.configure(timeout_rate=1.0, hang_seconds=0.2, fault_operations=["authorize"])
    order_id = uuid.uuid4()
    authorizing = asyncio.create_task(saga.deliver(reserved(order_id)))

    async def authorization_made():
        return (await sandbox.ledger(order_id))["authorization_count"] == 1

    # The reservation's transaction holds the payment row from before its call to the sandbox.
    await eventually(authorization_made, within=10, interval=0.01)
    await asyncio.gather(authorizing, saga.deliver(cancelled(order_id)))

    assert (await saga.payment(order_id)).status == PaymentStatus.VOIDED
    assert [event.type for event in await saga.events(order_id)] == ["payment.authorized"]
    ledger = await sandbox.ledger(order_id)
    assert (ledger["voided"], ledger["held"], ledger["charged"]) == (2500, 0, 0)
