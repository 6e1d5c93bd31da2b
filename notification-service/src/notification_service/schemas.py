"""Response bodies of the notification API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from mercato_shared.api import Page


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: uuid.UUID
    customer_id: str
    recipient: str | None
    kind: str
    subject: str
    message_id: str
    sent_at: datetime | None
    created_at: datetime


class NotificationPage(Page[NotificationRead]):
    """A page of notifications."""
