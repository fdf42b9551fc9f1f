"""Deletion: blob_pending_delete, the blob keys a deletion removed from the index and has
not yet removed from the blob store (the start-up sweep finishes them), as
``SqlIndex.create_schema`` makes it. Skipped where that already made it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("blob_pending_delete"):
        return
    op.create_table(
        "blob_pending_delete",
        sa.Column("blob_key", sa.String(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_key", name=op.f("pk_blob_pending_delete")),
    )


def downgrade() -> None:
    op.drop_table("blob_pending_delete")
