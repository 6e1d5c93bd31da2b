"""Alembic environment of the inventory database."""

from alembic import context

from inventory_service.models import Base
from mercato_shared.migrations import run_online

run_online(context.config, Base.metadata)
