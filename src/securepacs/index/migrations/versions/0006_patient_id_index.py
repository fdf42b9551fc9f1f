"""An index on ``patient.patient_id``: since revision 0004 the patient key starts with the
organisation, so a C-FIND by Patient ID (the most common query) could no longer use it and
scanned the patient or study table. Skipped where ``create_schema`` already made it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NAME = "ix_patient_patient_id"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if _NAME not in {ix["name"] for ix in inspector.get_indexes("patient")}:
        op.create_index(op.f(_NAME), "patient", ["patient_id"])


def downgrade() -> None:
    op.drop_index(op.f(_NAME), table_name="patient")
