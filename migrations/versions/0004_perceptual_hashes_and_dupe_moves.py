"""perceptual hashes and duplicate moves

``images.phash``: the 64-bit DCT perceptual hash ``imgvec dupes`` compares (NULL for rows added
before this revision: made from the file when ``dupes`` first needs it).
``library_state.dupes_seq``: the change seq the last whole-library ``dupes`` run saw (``--new``).
``dupe_moves``: what ``dupes --move-to`` moved, for ``dupes undo``.

Columns are added with plain ALTER TABLE (no table rebuild), so the ``photos`` view stays.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("images", sa.Column("phash", sa.BigInteger(), nullable=True))
    op.add_column("library_state", sa.Column("dupes_seq", sa.BigInteger(), nullable=True))
    op.create_table(
        "dupe_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("keeper_id", sa.Integer(), nullable=True),
        sa.Column("from_path", sa.Text(), nullable=False),
        sa.Column("to_path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dupe_moves_image_id", "dupe_moves", ["image_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dupe_moves_image_id", table_name="dupe_moves")
    op.drop_table("dupe_moves")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+, PostgreSQL): no rebuild, the view stays.
    op.drop_column("library_state", "dupes_seq")
    op.drop_column("images", "phash")
