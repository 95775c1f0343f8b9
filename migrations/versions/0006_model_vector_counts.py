"""model vector counts

``models.vector_count``: each model's number of stored vectors, kept up to date by every write
of ``embeddings``, so an index update, a filtered query and ``status`` read one row instead of
counting the table (O(N) at every update: 0.08 s at 1M vectors, issue 16). Existing libraries
get their counts here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "models", sa.Column("vector_count", sa.Integer(), server_default="0", nullable=False)
    )
    op.execute(
        "UPDATE models SET vector_count = "
        "(SELECT count(*) FROM embeddings WHERE embeddings.model_id = models.id)"
    )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+, PostgreSQL): no rebuild of a table that
    # others reference.
    op.drop_column("models", "vector_count")
