"""The address each notification was mailed to.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows written before this revision never recorded where they went.
    op.add_column("notifications", sa.Column("recipient", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("notifications", "recipient")
