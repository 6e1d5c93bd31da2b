"""Sending mail over SMTP, with failures sorted into "retry later" and "this mail is refused"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from email.message import Message
from typing import Protocol

import aiosmtplib

from notification_service.settings import NotificationSettings, SmtpSecurity

log = logging.getLogger(__name__)

# The reply of a server that is closing the connection (RFC 5321 §3.8: idle too long,
# shutting down, too busy); it is about the connection, not about the message.
SERVICE_CLOSING = 421
QUIT_SECONDS = 2.0


class MailUnavailableError(ConnectionError):
    """The mail server could not take the message now (unreachable, timeout, 4xx reply).

    A ConnectionError, hence an OSError: the shared consumer treats it as transient, retries
    the event and holds its partition until the server is back, rather than dead-lettering.
    """


class MailRejectedError(Exception):
    """The server refused this very message for good (5xx for its recipient or content).

    Not transient: retrying cannot help and would stall every later order on the partition,
    so the consumer dead-letters the event after its attempts, for an operator to replay.
    """


class Mailer(Protocol):
    async def send(self, message: Message) -> None: ...


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    # Only refusals of this message's recipient or content are about the message itself;
    # a refused login or sender is our configuration, which an operator fixes, then we retry.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refusal.code >= 500 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return exc.code >= 500
    return False


def _is_dropped(exc: Exception) -> bool:
    """Whether a failure on an open connection says the connection is gone, not the message."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return any(refusal.code == SERVICE_CLOSING for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == SERVICE_CLOSING
    # Disconnected, reset, or silent: a connection that stopped answering is presumed dead,
    # as a peer or a middlebox that forgot it drops what we write and only the timeout tells.
    return isinstance(exc, aiosmtplib.SMTPServerDisconnected | TimeoutError | OSError)


class SmtpMailer:
    """Up to ``smtp_connections`` SMTP connections, each opened on first need and reused.

    SMTP carries one mail transaction at a time per connection, and the consumer handles
    partitions side by side: with one connection their mails would take turns, each waiting
    for the four round trips of the one before (MAIL, RCPT, DATA, the message), which caps a
    worker at a few dozen mails a second on a busy machine. So each send takes an idle
    connection (the most recently used: the others age out), or opens one while fewer than
    the limit are open, or waits for one to come back.

    A connection the server dropped, whether it said so or not, is replaced and the message
    sent again on the new one, once, before the failure counts; a connection idle longer
    than ``smtp_idle_seconds`` is replaced before use, as servers drop idle clients. Any
    failed transaction closes its connection, so that nothing it left on the server (a
    half-open envelope, an unread reply) reaches the next message.
    """

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)

    async def send(self, message: Message) -> None:
        """Deliver ``message`` or raise MailUnavailableError / MailRejectedError."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else _Connection(self._settings)
            try:
                await connection.deliver(message)
            except aiosmtplib.SMTPException as exc:
                if _is_permanent(exc):
                    raise MailRejectedError(f"mail server refused the message: {exc}") from exc
                raise MailUnavailableError(f"mail server unavailable: {exc}") from exc
            except OSError as exc:
                raise MailUnavailableError(f"mail server unreachable: {exc}") from exc
            finally:
                # A connection whose transaction failed has closed itself; it is kept
                # anyway, as an empty slot that opens a new connection on its next use.
                self._idle.append(connection)

    async def close(self) -> None:
        """Say QUIT on every idle connection and close it; a later send opens a new one."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.close() for connection in idle))


class _Connection:
    """One SMTP connection of the mailer: opened on first use, replaced when it is dropped."""

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings
        self._smtp: aiosmtplib.SMTP | None = None
        self._last_used = 0.0

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        # A server that hung up first, or does not answer, notices the close below.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit(timeout=QUIT_SECONDS)
        smtp.close()

    async def deliver(self, message: Message) -> None:
        smtp = self._smtp
        if smtp is not None and not self._reusable(smtp):
            self._disconnect()
            smtp = None
        if smtp is not None:
            try:
                await self._transaction(smtp, message)
                return
            except (aiosmtplib.SMTPException, OSError) as exc:
                if not _is_dropped(exc):
                    raise
                # Sent again on a new connection with the same Message-ID: if the old one
                # had delivered it after all, the repeat is recognisably the same mail.
                log.info("SMTP connection lost (%s); sending on a new one", exc)
        await self._transaction(await self._connect(), message)

    def _reusable(self, smtp: aiosmtplib.SMTP) -> bool:
        idle = time.monotonic() - self._last_used
        return smtp.is_connected and idle < self._settings.smtp_idle_seconds

    async def _transaction(self, smtp: aiosmtplib.SMTP, message: Message) -> None:
        try:
            await smtp.send_message(message)
        except BaseException:
            # Whatever failed (a refusal, a timeout, a cancellation), the connection's state
            # is unknown: it is not reused.
            self._disconnect()
            raise
        self._last_used = time.monotonic()

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        password = settings.smtp_password.get_secret_value()
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout_seconds,
            local_hostname=settings.mail_domain,
            use_tls=settings.smtp_security is SmtpSecurity.TLS,
            # False, not None: "none" must not upgrade opportunistically either.
            start_tls=settings.smtp_security is SmtpSecurity.STARTTLS,
            username=settings.smtp_username or None,
            password=password if settings.smtp_username else None,
        )
        await smtp.connect()
        self._smtp = smtp
        return smtp

    def _disconnect(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None
