"""Tables of the notification database."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mercato_shared.tables import inbox_table, outbox_table


class Base(DeclarativeBase):
    pass


class Notification(Base):
    """One per order outcome; message_id is stable so a resend is recognisably the same mail."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    recipient: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
