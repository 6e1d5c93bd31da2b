"""Helpers of the notification tests: an order's stored notification, and a scripted SMTP
server (aiosmtpd on a port of its own that delivers like a mail server, counts connections,
and refuses or hangs up on request)."""

from __future__ import annotations

import asyncio
from collections import Counter
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mercato_shared.db import transaction
from notification_service import repository
from tests.infra import free_port

# What ``reuse_reply`` may be besides an SMTP reply: close the connection without a word, or
# keep it open and never answer (as a connection that a middlebox forgot looks to a client).
HANG_UP = "hang up"
SILENCE = "silence"


async def stored(sessions, order_id):
    """The order's one notification (None before it exists), as the API's filter reads it."""
    async with transaction(sessions) as session:
        found = await repository.list_notifications(
            session, customer_id=None, order_id=order_id, limit=2, offset=0
        )
    assert len(found) <= 1, f"order {order_id} has {len(found)} notifications"
    return found[0] if found else None


def message(n: int, *, to: str = "alice@example.test") -> EmailMessage:
    """A small mail whose Message-ID is <m{n}@mercato.test>."""
    mail = EmailMessage()
    mail["From"] = "orders@mercato.test"
    mail["To"] = to
    mail["Subject"] = f"Mail {n}"
    mail["Message-ID"] = f"<m{n}@mercato.test>"
    mail.set_content(f"Mail number {n}")
    return mail


class ScriptedServer:
    """``async with ScriptedServer(...) as server``: accepts mail on ``server.port``.

    ``refuse`` maps recipients to the reply RCPT gets for them; ``mail_reply``, when set,
    answers every MAIL; ``reuse_reply`` answers, once, the first MAIL of a connection that
    already carried a mail (or, as ``HANG_UP``, closes it there; as ``SILENCE``, never
    answers): what a client sees of a server that dropped it for idling, or shuts down.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        refuse: dict[str, str] | None = None,
        reuse_reply: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.refuse = refuse or {}
        self.reuse_reply = reuse_reply
        self.mail_reply: str | None = None
        self.connections = 0
        self.delivered: list[EmailMessage] = []
        self._mails: Counter[Session] = Counter()
        self._server: asyncio.Server | None = None

    @property
    def message_ids(self) -> list[str]:
        return [str(mail["Message-ID"]) for mail in self.delivered]

    async def __aenter__(self) -> ScriptedServer:
        loop = asyncio.get_running_loop()

        def accept() -> SMTP:
            self.connections += 1
            return SMTP(self, hostname="scripted", loop=loop)

        self._server = await loop.create_server(accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # aiosmtpd's hook names and signatures.
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self._mails[session] and self.reuse_reply is not None:
            reply, self.reuse_reply = self.reuse_reply, None
            if reply == SILENCE:
                await asyncio.Event().wait()  # until the client gives up and hangs up
            if reply != HANG_UP:
                return reply
            assert server.transport is not None
            server.transport.close()
            return "250 OK"  # never read: the connection is gone
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.delivered.append(parsed)
        self._mails[session] += 1
        return "250 Message accepted"
