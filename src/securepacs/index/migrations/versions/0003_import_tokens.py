"""Import tokens: trust_import_token (STOW-RS bearer tokens of the disc viewer's import),
as ``SqlTrustStore.create_schema`` makes it. Skipped where that already made it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("trust_import_token"):
        return
    op.create_table(
        "trust_import_token",
        sa.Column("token_id", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("organization", sa.String(), nullable=False),
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("expires_at", _UTC, nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("revoked_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_trust_import_token")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_trust_import_token_secret_hash")),
    )


def downgrade() -> None:
    op.drop_table("trust_import_token")
