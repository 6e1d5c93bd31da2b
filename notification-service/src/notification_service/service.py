"""Business rules of notifications."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared.db import transaction
from mercato_shared.identity import Identity
from notification_service import repository
from notification_service.mailer import Mailer
from notification_service.schemas import NotificationPage, NotificationRead
from notification_service.settings import NotificationSettings
from notification_service.templates import Text

log = logging.getLogger(__name__)


async def list_notifications(
    *,
    sessions: async_sessionmaker[AsyncSession],
    identity: Identity,
    customer_id: str | None,
    order_id: uuid.UUID | None = None,
    limit: int,
    offset: int,
) -> NotificationPage:
    """Customers see their own notifications; admins see all, or one customer's by filter."""
    owner = customer_id if identity.is_admin else identity.subject
    async with transaction(sessions) as session:
        rows = await repository.list_notifications(
            session, customer_id=owner, order_id=order_id, limit=limit, offset=offset
        )
    return NotificationPage(
        items=[NotificationRead.model_validate(row) for row in rows], limit=limit, offset=offset
    )


def message_id_for(order_id: uuid.UUID, *, domain: str) -> str:
    """The Message-ID of an order's notification: the same on every (re)send."""
    return f"<order-{order_id}@{domain}>"


def recipient_for(*, email: str | None, customer_id: str, fallback_domain: str) -> str:
    """The order's e-mail address, or a per-customer address when the order carries none."""
    return email or f"{customer_id}@{fallback_domain}"


async def notify_outcome(
    session: AsyncSession,
    *,
    settings: NotificationSettings,
    mailer: Mailer,
    order_id: uuid.UUID,
    customer_id: str,
    email: str | None,
    kind: str,
    text: Text,
) -> bool:
    """Store and mail the order's one notification, in the caller's transaction.

    Returns False when the order already has its notification (a redelivered or second
    terminal event): nothing is stored or sent then. The mail goes out before the caller
    commits, and a failed send raises so that the transaction rolls back and the event is
    retried. A crash after sending but before the commit therefore sends the mail again on
    redelivery: delivery is at least once, and the repeat carries the same Message-ID so
    that mail clients and `mercato check` recognise it as the same message.
    """
    recipient = recipient_for(
        email=email, customer_id=customer_id, fallback_domain=settings.fallback_email_domain
    )
    message_id = message_id_for(order_id, domain=settings.mail_domain)
    notification_id = await repository.insert_if_absent(
        session,
        order_id=order_id,
        customer_id=customer_id,
        recipient=recipient,
        kind=kind,
        subject=text.subject,
        body=text.body,
        message_id=message_id,
    )
    if notification_id is None:
        log.info("order already notified", extra={"order_id": str(order_id)})
        return False
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Subject"] = text.subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(datetime.now(UTC))
    message.set_content(text.body)
    await mailer.send(message)
    await repository.mark_sent(session, notification_id, at=datetime.now(UTC))
    log.info("notification sent", extra={"order_id": str(order_id), "kind": kind})
    return True
