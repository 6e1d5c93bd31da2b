"""The order-outcome steps on a real migrated database, mailing a real mail catcher."""

import uuid
from email import message_from_bytes
from email.policy import default as default_policy

import httpx
import pytest
from aiosmtplib.email import flatten_message

from mercato_ops.mailcatcher import MailCatcher
from mercato_shared.consumer import is_transient
from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.events import (
    CancelReason,
    Envelope,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
)
from mercato_shared.identity import Identity, Role
from notification_service import service
from notification_service.handlers import build_handlers
from notification_service.mailer import MailRejectedError, MailUnavailableError, SmtpMailer
from notification_service.saga import compose
from notification_service.settings import NotificationSettings
from notification_service.templates import CANCEL_REASONS, Text
from tests.notification_service.support import ScriptedServer, stored

ADMIN = Identity(subject="root", roles=frozenset({Role.ADMIN}))


@pytest.fixture
def settings(notification_db, catcher_settings):
    return NotificationSettings(
        database_url=notification_db,
        smtp_port=catcher_settings.smtp_port,
        smtp_timeout_seconds=5,
    )


@pytest.fixture
async def sessions(settings):
    engine = create_engine(settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


def confirmed(order_id=None, *, email="alice@example.test", amount=123456, currency="EUR"):
    event = OrderConfirmed(customer_id="alice", email=email, amount=amount, currency=currency)
    return Envelope.wrap(event, order_id=order_id or uuid.uuid4())


def cancelled(order_id=None, *, reason=CancelReason.OUT_OF_STOCK, email=None):
    event = OrderCancelled(customer_id="bob", email=email, reason=reason)
    return Envelope.wrap(event, order_id=order_id or uuid.uuid4())


@pytest.fixture
async def handle(settings, sessions):
    """Run the worker's step for an envelope in one transaction, as the consumer does.

    One mailer serves the whole test, as one serves the whole worker.
    """
    mailer = SmtpMailer(settings)
    handlers = build_handlers(settings, mailer)

    async def run(envelope, *, then=None):
        """``then`` runs after the step, in its transaction: raising there rolls it back."""
        async with transaction(sessions) as session:
            await handlers[envelope.type](session, envelope)
            if then is not None:
                then()

    yield run
    await mailer.close()


async def stored_count(sessions):
    page = await service.list_notifications(
        sessions=sessions, identity=ADMIN, customer_id=None, limit=200, offset=0
    )
    return len(page.items)


async def raw_mail(catcher, n):
    """The n-th mail as the catcher received it, parsed."""
    async with httpx.AsyncClient(base_url=catcher.http_url) as http:
        raw = (await http.get(f"/api/messages/{n}")).content
    return message_from_bytes(raw, policy=default_policy)


def test_only_terminal_events_are_handled(settings):
    handlers = build_handlers(settings, SmtpMailer(settings))  # never connects: nothing sent
    assert set(handlers) == {"order.confirmed", "order.cancelled"}
    assert OrderCreated.event_type not in handlers


async def test_a_confirmed_order_is_stored_and_mailed(sessions, handle, catcher, mails):
    envelope = confirmed()
    await handle(envelope)

    row = await stored(sessions, envelope.order_id)
    assert row is not None
    assert row.kind == "order.confirmed"
    assert row.customer_id == "alice"
    assert row.recipient == "alice@example.test"
    assert row.message_id == f"<order-{envelope.order_id}@mercato.local>"
    assert row.sent_at is not None
    assert "1,234.56 EUR" in row.body

    [mail] = await mails(catcher)
    assert mail["message_id"] == row.message_id
    assert mail["to"] == ["alice@example.test"]
    assert mail["from"] == "orders@mercato.local"
    assert mail["subject"] == row.subject
    assert "confirmed" in mail["subject"]
    message = await raw_mail(catcher, mail["n"])
    assert message["Message-ID"] == f"<order-{envelope.order_id}@mercato.local>"
    assert message["To"] == "alice@example.test"
    assert "1,234.56 EUR" in message.get_content()


async def test_a_redelivered_or_second_event_sends_nothing_more(sessions, handle, catcher, mails):
    envelope = confirmed()
    await handle(envelope)
    first = await stored(sessions, envelope.order_id)
    await handle(envelope)
    # The first terminal event wins, whatever comes after it for the same order.
    await handle(cancelled(envelope.order_id))

    assert await stored_count(sessions) == 1
    again = await stored(sessions, envelope.order_id)
    assert (again.kind, again.sent_at) == ("order.confirmed", first.sent_at)
    assert len(await mails(catcher)) == 1


class _Crash(Exception):
    pass


def _crash():
    raise _Crash


async def test_a_mail_sent_again_after_a_rollback_is_the_same_mail(
    sessions, handle, catcher, mails
):
    envelope = confirmed()
    # Mailed, then the transaction rolls back before its commit (a crash, or a later event of
    # its batch failing): the event comes again and its mail goes out again.
    with pytest.raises(_Crash):
        await handle(envelope, then=_crash)
    assert await stored(sessions, envelope.order_id) is None
    await handle(envelope)

    first, again = await mails(catcher)
    message_id = f"<order-{envelope.order_id}@mercato.local>"
    assert first["message_id"] == again["message_id"] == message_id
    assert again["deliveries"] == 2
    assert (await stored(sessions, envelope.order_id)).message_id == message_id
    assert catcher.connections == 1


async def test_a_cancelled_order_says_why(sessions, handle, catcher, mails):
    orders = {reason: uuid.uuid4() for reason in CancelReason}
    for reason, order_id in orders.items():
        await handle(cancelled(order_id, reason=reason))

    delivered = {m["message_id"]: m for m in await mails(catcher)}
    assert len(delivered) == len(CancelReason)
    for reason, order_id in orders.items():
        row = await stored(sessions, order_id)
        assert row.kind == "order.cancelled"
        assert CANCEL_REASONS[reason] in row.body
        mail = delivered[row.message_id]
        assert "cancelled" in mail["subject"]
        # No address on the order: the customer's fallback address.
        assert mail["to"] == ["bob@customers.mercato.test"]
        assert CANCEL_REASONS[reason] in (await raw_mail(catcher, mail["n"])).get_content()


async def test_an_unreachable_mail_server_is_transient_and_stores_nothing(
    sessions, handle, catcher_settings, mails
):
    envelope = confirmed()
    # No catcher runs on the configured port yet.
    with pytest.raises(MailUnavailableError) as failure:
        await handle(envelope)
    assert is_transient(failure.value)
    assert await stored(sessions, envelope.order_id) is None

    async with MailCatcher(catcher_settings) as catcher:
        await handle(envelope)
        [mail] = await mails(catcher)
    assert mail["message_id"] == f"<order-{envelope.order_id}@mercato.local>"
    assert (await stored(sessions, envelope.order_id)).sent_at is not None


@pytest.mark.parametrize(
    ("reply", "error", "transient"),
    [
        ("451 4.3.0 try again later", MailUnavailableError, True),
        ("550 5.1.1 no such user", MailRejectedError, False),
    ],
)
async def test_refusals_are_sorted_into_retry_and_give_up(
    settings, sessions, handle, reply, error, transient
):
    envelope = confirmed()
    async with ScriptedServer(port=settings.smtp_port, refuse={"alice@example.test": reply}):
        with pytest.raises(error) as failure:
            await handle(envelope)
    assert is_transient(failure.value) is transient
    assert await stored(sessions, envelope.order_id) is None


def test_a_mail_keeps_any_text_and_reads_as_written_when_it_is_ascii():
    def sent(text):
        message = compose(
            sender="shop@example.test", recipient="a@example.test", text=text, message_id="<m@x>"
        )
        return flatten_message(message)

    plain = Text(subject="Order confirmed", body="Total: 12.00 EUR\n")
    assert b"\n\nTotal: 12.00 EUR\n" in sent(plain).replace(b"\r\n", b"\n")
    accented = Text(subject="Commande confirmée", body="Total : 12,00 € = payé\n" + "x" * 120)
    parsed = message_from_bytes(sent(accented), policy=default_policy)
    assert (parsed["Subject"], parsed["Message-ID"]) == (accented.subject, "<m@x>")
    assert parsed.get_content().rstrip("\n") == accented.body
