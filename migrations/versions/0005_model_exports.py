"""model exports

``model_exports``: each model's ONNX export, the file queries run with ONNX Runtime without
importing torch (issue 15), recorded like an index segment (path, sha256, size); or why the
model could not be exported. Existing libraries get theirs on the next command that loads the
model while it may write (``add``, ``model use``, a query that embeds a photo).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_exports",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("exporter", sa.String(length=100), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_exports_model_id_models",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", name="pk_model_exports"),
    )


def downgrade() -> None:
    op.drop_table("model_exports")
