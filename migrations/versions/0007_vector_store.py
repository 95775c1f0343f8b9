"""vector store

``library_state.vectors``: where the library's indexes live: NULL for versioned FAISS files in
the library folder (as before), or the URL of a Milvus server or Milvus Lite store
(``milvus://HOST:PORT[/DB]``, ``milvus-lite:///PATH.db``, issue 17), recorded when the library is
made so that every command, on every machine sharing the database, uses the same one.
``library_state.library_id``: a random name that keeps this library's Milvus collections apart
from other libraries' on a shared server. Existing libraries keep FAISS files.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("library_state", sa.Column("vectors", sa.Text(), nullable=True))
    op.add_column("library_state", sa.Column("library_id", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("library_state", "library_id")
    op.drop_column("library_state", "vectors")
