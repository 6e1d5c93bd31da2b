"""Sending mail over SMTP, with failures sorted into "retry later" and "this mail is refused"."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from notification_service.settings import NotificationSettings, SmtpSecurity


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
    async def send(self, message: EmailMessage) -> None: ...


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    # Only refusals of this message's recipient or content are about the message itself;
    # a refused login or sender is our configuration, which an operator fixes, then we retry.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refusal.code >= 500 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return exc.code >= 500
    return False


class SmtpMailer:
    """One SMTP connection per message: notifications are few, and nothing idles open."""

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` or raise MailUnavailableError / MailRejectedError."""
        settings = self._settings
        password = settings.smtp_password.get_secret_value()
        try:
            await aiosmtplib.send(
                message,
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
        except aiosmtplib.SMTPException as exc:
            if _is_permanent(exc):
                raise MailRejectedError(f"mail server refused the message: {exc}") from exc
            raise MailUnavailableError(f"mail server unavailable: {exc}") from exc
        except OSError as exc:
            raise MailUnavailableError(f"mail server unreachable: {exc}") from exc
