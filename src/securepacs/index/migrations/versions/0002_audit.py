"""Audit tables: audit_event (the hash-chained PS3.15 A.5 records) and audit_head, as
``SqlAuditLog.create_schema`` makes them. Skipped where that already made them (a schema
stamped as 0001 after the audit store ran).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)
GENESIS = "0" * 64


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("audit_event"):
        op.create_table(
            "audit_event",
            sa.Column("seq", _KEY, autoincrement=False, nullable=False),
            sa.Column("record_id", sa.String(), nullable=False),
            sa.Column("event_time", _UTC, nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("outcome", sa.Integer(), nullable=False),
            sa.Column("user_ids", sa.Text(), nullable=False),
            sa.Column("patient_ids", sa.Text(), nullable=False),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_event")),
            sa.UniqueConstraint("record_id", name=op.f("uq_audit_event_record_id")),
        )
        op.create_index(op.f("ix_audit_event_event_time"), "audit_event", ["event_time"])
    if not inspector.has_table("audit_head"):
        op.create_table(
            "audit_head",
            sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("last_seq", sa.BigInteger(), nullable=False),
            sa.Column("last_hash", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
        )
    # the chain's head row (a create_all by another store may have made the table without it)
    head = sa.table("audit_head", sa.column("id", sa.Integer), sa.column("last_seq", sa.BigInteger),
                    sa.column("last_hash", sa.String))
    if op.get_bind().execute(sa.select(head.c.id)).first() is None:
        op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_event")
