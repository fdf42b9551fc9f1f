"""Deletion: blob_pending_delete, the blob keys a deletion removed from the index and has
not yet removed from the blob store (the start-up sweep finishes them), and blob_trash,
the blobs of deleted instances kept restorable (``trash_days``), as
``SqlIndex.create_schema`` makes them. Skipped where that already made them.

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
    if not inspector.has_table("blob_pending_delete"):
        op.create_table(
            "blob_pending_delete",
            sa.Column("blob_key", sa.String(), nullable=False),
            sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("blob_key", name=op.f("pk_blob_pending_delete")),
        )
    if not inspector.has_table("blob_trash"):
        op.create_table(
            "blob_trash",
            sa.Column("blob_key", sa.String(), nullable=False),
            sa.Column("organization", sa.String(), nullable=False),
            sa.Column("study_uid", sa.String(), nullable=False),
            sa.Column("patient_id", sa.String(), nullable=False),
            sa.Column("sop_class_uid", sa.String(), nullable=False),
            sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("purge_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("blob_key", name=op.f("pk_blob_trash")),
        )
        op.create_index(op.f("ix_blob_trash_study_uid"), "blob_trash", ["study_uid"])
        op.create_index(op.f("ix_blob_trash_purge_at"), "blob_trash", ["purge_at"])


def downgrade() -> None:
    op.drop_table("blob_trash")
    op.drop_table("blob_pending_delete")
