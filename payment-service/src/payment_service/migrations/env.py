"""Alembic environment of the payment database."""

from alembic import context

from mercato_shared.migrations import run_online
from payment_service.models import Base

run_online(context.config, Base.metadata)
