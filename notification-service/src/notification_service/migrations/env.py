"""Alembic environment of the notification database."""

from alembic import context

from mercato_shared.migrations import run_online
from notification_service.models import Base

run_online(context.config, Base.metadata)
