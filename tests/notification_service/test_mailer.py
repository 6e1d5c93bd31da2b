"""The SMTP mailer against real SMTP servers: its connections are reused for every mail, at
most ``smtp_connections`` are open, and a connection the server dropped is replaced without
losing or repeating a mail."""

import asyncio
import logging

import pytest

from mercato_ops.mailcatcher import MailCatcher
from mercato_shared.consumer import is_transient
from notification_service.mailer import MailRejectedError, MailUnavailableError, SmtpMailer
from notification_service.settings import NotificationSettings
from tests.infra import eventually
from tests.notification_service.support import HANG_UP, SILENCE, ScriptedServer, message


@pytest.fixture
async def mailer_for():
    """Build mailers for a port (closed at the end of the test, as the worker would)."""
    built: list[SmtpMailer] = []

    def build(port: int, **settings) -> SmtpMailer:
        mailer = SmtpMailer(
            NotificationSettings(**{"smtp_port": port, "smtp_timeout_seconds": 5, **settings})
        )
        built.append(mailer)
        return mailer

    yield build
    for mailer in built:
        await mailer.close()


async def test_one_connection_carries_mails_sent_one_after_another(catcher, mailer_for, mails):
    mailer = mailer_for(catcher.smtp_port)
    for n in range(5):
        await mailer.send(message(n))

    delivered = await mails(catcher)
    assert sorted(m["message_id"] for m in delivered) == [f"<m{n}@mercato.test>" for n in range(5)]
    assert catcher.connections == 1
    assert catcher.open_connections == 1


async def test_mails_sent_side_by_side_share_at_most_the_configured_connections(
    catcher, mailer_for, mails
):
    mailer = mailer_for(catcher.smtp_port, smtp_connections=3)
    # Partitions send side by side: twelve mails in flight, three connections carry them.
    await asyncio.gather(*(mailer.send(message(n)) for n in range(12)))
    await asyncio.gather(*(mailer.send(message(n)) for n in range(12, 24)))

    delivered = await mails(catcher)
    assert sorted(m["message_id"] for m in delivered) == sorted(
        f"<m{n}@mercato.test>" for n in range(24)
    )
    assert all(m["deliveries"] == 1 for m in delivered)
    # The second round reused the first's connections instead of opening more.
    assert catcher.connections == 3
    assert catcher.open_connections == 3


async def test_mails_take_turns_on_a_single_connection(catcher, mailer_for, mails):
    mailer = mailer_for(catcher.smtp_port, smtp_connections=1)
    await asyncio.gather(*(mailer.send(message(n)) for n in range(6)))

    assert len(await mails(catcher)) == 6
    assert catcher.connections == 1


async def test_a_restarted_server_gets_the_next_mail_once(catcher_settings, mailer_for):
    mailer = mailer_for(catcher_settings.smtp_port)
    async with MailCatcher(catcher_settings) as first:
        await mailer.send(message(1))
    # The stopped catcher closed the connection with a 421; the next one listens on its port.
    async with MailCatcher(catcher_settings) as second:
        await mailer.send(message(2))
        await mailer.send(message(3))
        assert second.store.delivery_counts() == {
            "<m1@mercato.test>": 1,
            "<m2@mercato.test>": 1,
            "<m3@mercato.test>": 1,
        }
        assert (first.connections, second.connections) == (1, 1)


@pytest.mark.parametrize(
    "drop",
    [HANG_UP, "421 4.4.2 Idle for too long, closing the connection", SILENCE],
    ids=["hang-up", "421", "no-answer"],
)
async def test_a_dropped_connection_is_replaced_and_the_mail_sent_once(mailer_for, drop, caplog):
    caplog.set_level(logging.INFO, logger="notification_service.mailer")
    async with ScriptedServer(reuse_reply=drop) as server:
        # A short timeout, for the connection that no longer answers.
        mailer = mailer_for(server.port, smtp_timeout_seconds=2)
        await mailer.send(message(1))
        await mailer.send(message(2))  # the reused connection fails; a new one carries it
        await mailer.send(message(3))
        # Each mail arrived once, the one sent again with the Message-ID it had.
        assert server.message_ids == ["<m1@mercato.test>", "<m2@mercato.test>", "<m3@mercato.test>"]
        assert server.connections == 2
        assert [r for r in caplog.records if "sending on a new one" in r.getMessage()]


async def test_a_mail_that_fails_on_a_new_connection_too_is_unavailable(mailer_for):
    async with ScriptedServer() as server:
        mailer = mailer_for(server.port)
        await mailer.send(message(1))
        server.mail_reply = "421 4.3.2 Shutting down"
        with pytest.raises(MailUnavailableError) as failure:
            await mailer.send(message(2))
        assert is_transient(failure.value)
        # One new connection was tried, not more: the consumer's retries take it from there.
        assert server.connections == 2
        assert server.message_ids == ["<m1@mercato.test>"]


async def test_a_new_connection_that_fails_is_not_tried_again_at_once(mailer_for):
    async with ScriptedServer() as server:
        server.mail_reply = "451 4.3.0 Try again later"
        with pytest.raises(MailUnavailableError):
            await mailer_for(server.port).send(message(1))
        assert server.connections == 1


async def test_a_refused_recipient_is_rejected_and_spoils_nothing_for_the_next(mailer_for):
    refusal = "550 5.1.1 No such user"
    async with ScriptedServer(refuse={"nobody@example.test": refusal}) as server:
        mailer = mailer_for(server.port)
        await mailer.send(message(1))
        with pytest.raises(MailRejectedError) as failure:
            await mailer.send(message(2, to="nobody@example.test"))
        assert not is_transient(failure.value)
        await mailer.send(message(3))
        assert server.message_ids == ["<m1@mercato.test>", "<m3@mercato.test>"]


async def test_an_idle_connection_is_replaced_before_use(mailer_for):
    async with ScriptedServer() as server:
        # Every gap between two mails is longer than this: each mail gets a new connection.
        mailer = mailer_for(server.port, smtp_idle_seconds=1e-9)
        await mailer.send(message(1))
        await mailer.send(message(2))
        assert server.message_ids == ["<m1@mercato.test>", "<m2@mercato.test>"]
        assert server.connections == 2


async def test_close_ends_the_connection_and_a_later_mail_opens_another(catcher, mailer_for):
    mailer = mailer_for(catcher.smtp_port)
    await mailer.send(message(1))
    await mailer.close()

    async def closed():
        return catcher.open_connections == 0

    await eventually(closed, within=10)
    await mailer.send(message(2))
    assert catcher.connections == 2
    assert [d.message_id for d in catcher.store.deliveries()] == [
        "<m2@mercato.test>",
        "<m1@mercato.test>",
    ]
