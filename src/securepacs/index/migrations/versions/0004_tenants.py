"""Organisations as tenants: every index row gets its owner organisation, the UIDs become
unique per organisation, a patient without a Patient ID gets an ``anchor`` so that it never
matches another, and the trust store gets its shares (trust_share). Rows indexed before
belong to the default organisation (``default_organisation``, handed over by
:func:`securepacs.index.migrate.upgrade`). Schema version 2.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _org() -> sa.Column[str]:
    return sa.Column("organization", _TEXT, nullable=False, server_default="")


def upgrade() -> None:
    default = str(context.config.attributes.get("default_organisation") or "default")
    inspector = sa.inspect(op.get_bind())
    if "organization" not in {c["name"] for c in inspector.get_columns("patient")}:
        _tenant_columns(default)
    if not inspector.has_table("trust_share"):
        _shares()


def _tenant_columns(default: str) -> None:
    with op.batch_alter_table("patient") as batch:
        batch.add_column(_org())
        batch.add_column(sa.Column("anchor", _TEXT, nullable=False, server_default=""))
        batch.drop_constraint("uq_patient_patient_id_issuer", type_="unique")
        batch.create_unique_constraint(op.f("uq_patient_organization_patient_id_issuer_anchor"),
                                       ["organization", "patient_id", "issuer", "anchor"])
    with op.batch_alter_table("study") as batch:
        batch.add_column(_org())
        batch.drop_constraint("uq_study_study_uid", type_="unique")
        batch.create_unique_constraint(op.f("uq_study_study_uid_organization"),
                                       ["study_uid", "organization"])
        batch.create_index(op.f("ix_study_organization"), ["organization"])
    with op.batch_alter_table("series") as batch:
        batch.add_column(_org())
        batch.drop_constraint("uq_series_series_uid", type_="unique")
        batch.create_unique_constraint(op.f("uq_series_series_uid_organization"),
                                       ["series_uid", "organization"])
    with op.batch_alter_table("instance") as batch:
        batch.add_column(_org())
        batch.drop_constraint("uq_instance_sop_instance_uid", type_="unique")
        batch.create_unique_constraint(op.f("uq_instance_sop_instance_uid_organization"),
                                       ["sop_instance_uid", "organization"])
    for table in ("patient", "study", "series", "instance"):
        op.execute(sa.text(f"UPDATE {table} SET organization = :org").bindparams(org=default))
    # 17.4: the patients filed under an empty Patient ID were one merged patient; it stays
    # one row (its studies cannot be told apart any more) but no longer matches new ones
    op.execute(sa.text("UPDATE patient SET anchor = 'merged-before-0004' WHERE patient_id = ''"))
    op.execute(sa.text("UPDATE schema_version SET version = 2"))


def _shares() -> None:
    op.create_table(
        "trust_share",
        sa.Column("share_id", sa.String(), nullable=False),
        sa.Column("study_uid", _TEXT, nullable=False),
        sa.Column("owner", _TEXT, nullable=False),
        sa.Column("grantee", _TEXT, nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("until", _UTC, nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("revoked_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("share_id", name=op.f("pk_trust_share")),
    )
    op.create_index(op.f("ix_trust_share_grantee_study_uid"), "trust_share",
                    ["grantee", "study_uid"])


def downgrade() -> None:  # pragma: no cover - one-way: UIDs may now repeat across tenants
    raise NotImplementedError("revision 0004 cannot be downgraded")
