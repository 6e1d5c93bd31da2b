"""payment's sandbox client under processor trouble: outages, unknown outcomes, and steps that
must not be lost."""

import asyncio
import uuid
from collections.abc import Callable

import pytest

from mercato_shared.consumer import is_transient
from mercato_shared.events import CancelReason, Envelope, PaymentFailed, PaymentFailure, payload_as
from mercato_shared.resilience import BreakerState
from payment_service.models import PaymentStatus
from payment_service.sandbox import ProviderUnavailableError
from tests.infra import eventually
from tests.payment_service.support import Saga, cancelled, confirmed, reserved


@pytest.fixture
async def tuned(settings, sessions):
    """A saga whose settings a test adjusts: ``await tuned(sandbox_max_attempts=8)``."""
    made = []

    async def make(**changes):
        made.append(Saga(settings.model_copy(update=changes), sessions))
        return made[-1]

    yield make
    for saga in made:
        await saga.sandbox.aclose()


async def _assert_failed_unavailable(saga, order_id):
    payment = await saga.payment(order_id)
    assert (payment.status, payment.failure_reason) == (
        PaymentStatus.FAILED,
        "provider_unavailable",
    )
    [event] = await saga.events(order_id)
    assert payload_as(event, PaymentFailed).reason is PaymentFailure.PROVIDER_UNAVAILABLE
    return payment


async def test_an_outage_opens_the_breaker_and_fails_orders_with_their_keys_voided(saga, sandbox):
    await sandbox.configure(failure_rate=1.0, fault_operations=["authorize"])
    order_ids = [uuid.uuid4() for _ in range(3)]
    for order_id in order_ids:
        await saga.deliver(reserved(order_id))

    assert saga.sandbox.breaker.state is BreakerState.OPEN
    assert saga.sandbox.breaker.metrics().rejected_calls >= 1
    for order_id in order_ids:
        payment = await _assert_failed_unavailable(saga, order_id)
        assert payment.key_voided
        assert (await sandbox.ledger(order_id))["authorization_count"] == 0

    # The processor is back: a straggling authorization under a voided key is refused.
    await sandbox.configure(failure_rate=0.0)
    late = await sandbox.authorize_directly(order_ids[0])
    assert (late["status"], late["decline_reason"]) == ("declined", "idempotency_key_voided")
    assert (await sandbox.ledger(order_ids[0]))["charged"] == 0


async def test_unknown_outcomes_are_retried_with_one_key_and_voided_on_giving_up(saga, sandbox):
    # Every authorization is made, then its answer hangs past the client's timeout.
    await sandbox.configure(timeout_rate=1.0, hang_seconds=5, fault_operations=["authorize"])
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id))

    payment = await _assert_failed_unavailable(saga, order_id)
    assert payment.key_voided
    ledger = await sandbox.ledger(order_id)
    assert ledger["authorization_count"] == 1  # three attempts, one authorization
    assert (ledger["authorized"], ledger["voided"], ledger["held"], ledger["charged"]) == (
        2500,
        2500,
        0,
        0,
    )


async def test_a_timeout_then_an_answer_authorizes_exactly_once(tuned, sandbox):
    saga = await tuned(sandbox_max_attempts=8, sandbox_retry_base_delay_seconds=0.05)
    await sandbox.configure(timeout_rate=1.0, hang_seconds=5, fault_operations=["authorize"])
    order_id = uuid.uuid4()
    delivery = asyncio.create_task(saga.deliver(reserved(order_id)))

    async def first_attempt_landed():
        return (await sandbox.ledger(order_id))["authorization_count"] == 1

    await eventually(first_attempt_landed, within=10, interval=0.02)
    await sandbox.configure(timeout_rate=0.0)
    await delivery

    payment = await saga.payment(order_id)
    assert payment.status == PaymentStatus.AUTHORIZED
    ledger = await sandbox.ledger(order_id)
    assert (ledger["authorization_count"], ledger["held"]) == (1, 2500)
    assert ledger["authorizations"][0]["id"] == payment.provider_ref


@pytest.mark.parametrize(
    ("steps", "operation", "settled"),
    [
        ("confirmed", "capture", PaymentStatus.CAPTURED),
        ("cancelled", "void", PaymentStatus.VOIDED),
        ("confirmed cancelled", "refund", PaymentStatus.REFUNDED),
    ],
)
async def test_provider_trouble_during_compensation_retries_the_event(
    tuned, sandbox, steps, operation, settled
):
    saga = await tuned(sandbox_breaker_open_seconds=0.5)
    order_id = uuid.uuid4()
    build: dict[str, Callable[[uuid.UUID], Envelope]] = {
        "confirmed": confirmed,
        "cancelled": cancelled,
    }
    events = [build[name](order_id) for name in steps.split()]
    await saga.deliver(reserved(order_id))
    for event in events[:-1]:
        await saga.deliver(event)
    before = (await saga.payment(order_id)).status
    last = events[-1]

    await sandbox.configure(failure_rate=1.0, fault_operations=[operation])
    with pytest.raises(ProviderUnavailableError) as raised:
        await saga.deliver(last)
    # The shared consumer retries transient failures forever instead of dead-lettering.
    assert is_transient(raised.value)
    assert (await saga.payment(order_id)).status == before
    assert not await saga.handled(last.id)

    # Back again; redeliveries fail fast while the breaker is open, then one goes through.
    await sandbox.configure(failure_rate=0.0)
    await eventually(lambda: _delivered(saga, last), within=10)
    assert (await saga.payment(order_id)).status == settled
    assert saga.sandbox.breaker.state is not BreakerState.OPEN


async def _delivered(saga, envelope):
    await saga.deliver(envelope)
    return await saga.handled(envelope.id)


async def test_a_key_void_that_fails_too_is_finished_by_the_cancellation(saga, sandbox):
    await sandbox.configure(failure_rate=1.0)  # every operation, key voids included
    order_id = uuid.uuid4()
    await saga.deliver(reserved(order_id))
    payment = await _assert_failed_unavailable(saga, order_id)
    assert not payment.key_voided

    cancellation = cancelled(order_id, reason=CancelReason.PAYMENT_UNAVAILABLE)
    with pytest.raises(ProviderUnavailableError):
        await saga.deliver(cancellation)
    await sandbox.configure(failure_rate=0.0)
    await saga.deliver(cancellation)

    payment = await saga.payment(order_id)
    assert (payment.status, payment.key_voided) == (PaymentStatus.FAILED, True)
    late = await sandbox.authorize_directly(order_id)
    assert late["decline_reason"] == "idempotency_key_voided"
