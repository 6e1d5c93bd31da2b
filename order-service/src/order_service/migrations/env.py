"""Alembic environment of the order database."""

from alembic import context

from mercato_shared.migrations import run_online
from order_service.models import Base

run_online(context.config, Base.metadata)
