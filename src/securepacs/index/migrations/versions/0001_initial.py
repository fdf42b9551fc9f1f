"""Initial schema: the index tables (patient, study, series, instance, schema_version) and
the trust tables (trust_group, trust_certificate, trust_token, trust_state), exactly as
``SqlIndex.create_schema`` and ``SqlTrustStore.create_schema`` make them (schema version 1).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table('patient',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('patient_id', _TEXT, nullable=False),
    sa.Column('issuer', _TEXT, server_default='', nullable=False),
    sa.Column('patient_name', _TEXT, nullable=True),
    sa.Column('birth_date', _TEXT, nullable=True),
    sa.Column('sex', _TEXT, nullable=True),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient')),
    sa.UniqueConstraint('patient_id', 'issuer', name=op.f('uq_patient_patient_id_issuer'))
    )
    op.create_index(op.f('ix_patient_patient_name'), 'patient', ['patient_name'])
    op.create_table('schema_version',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_schema_version'))
    )
    op.create_table('trust_certificate',
    sa.Column('serial', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('fingerprint', sa.String(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pem', sa.Text(), nullable=False),
    sa.Column('organization', sa.String(), nullable=True),
    sa.Column('group_name', sa.String(), nullable=True),
    sa.Column('ae_titles', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(), nullable=True),
    sa.Column('key_path', sa.String(), nullable=True),
    sa.Column('renewed_from', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('serial', name=op.f('pk_trust_certificate')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_trust_certificate_fingerprint'))
    )
    op.create_index(op.f('ix_trust_certificate_name'), 'trust_certificate', ['name'])
    op.create_table('trust_group',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('permissions', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_trust_group'))
    )
    op.create_table('trust_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('crl_number', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trust_state'))
    )
    op.create_table('trust_token',
    sa.Column('secret_hash', sa.String(), nullable=False),
    sa.Column('organization', sa.String(), nullable=False),
    sa.Column('group_name', sa.String(), nullable=False),
    sa.Column('ae_titles', sa.JSON(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('secret_hash', name=op.f('pk_trust_token'))
    )
    op.create_table('study',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('study_uid', _TEXT, nullable=False),
    sa.Column('patient_pk', _KEY, nullable=False),
    sa.Column('study_date', _TEXT, nullable=True),
    sa.Column('study_time', _TEXT, nullable=True),
    sa.Column('accession_number', _TEXT, nullable=True),
    sa.Column('study_id', _TEXT, nullable=True),
    sa.Column('description', _TEXT, nullable=True),
    sa.Column('referring_physician', _TEXT, nullable=True),
    sa.Column('modalities', _TEXT, server_default='', nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_study_patient_pk')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study')),
    sa.UniqueConstraint('study_uid', name=op.f('uq_study_study_uid'))
    )
    op.create_index(op.f('ix_study_accession_number'), 'study', ['accession_number'])
    op.create_index(op.f('ix_study_patient_pk'), 'study', ['patient_pk'])
    op.create_index(op.f('ix_study_study_date'), 'study', ['study_date'])
    op.create_table('series',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('series_uid', _TEXT, nullable=False),
    sa.Column('study_pk', _KEY, nullable=False),
    sa.Column('modality', _TEXT, nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('description', _TEXT, nullable=True),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['study_pk'], ['study.id'], name=op.f('fk_series_study_pk')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('series_uid', name=op.f('uq_series_series_uid'))
    )
    op.create_index(op.f('ix_series_modality_study_pk'), 'series', ['modality', 'study_pk'])
    op.create_index(op.f('ix_series_study_pk'), 'series', ['study_pk'])
    op.create_table('instance',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('sop_instance_uid', _TEXT, nullable=False),
    sa.Column('series_pk', _KEY, nullable=False),
    sa.Column('sop_class_uid', _TEXT, nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(), nullable=False),
    sa.Column('blob_key', sa.String(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source_ae', sa.String(), server_default='', nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_pk'], ['series.id'], name=op.f('fk_instance_series_pk')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instance')),
    sa.UniqueConstraint('blob_key', name=op.f('uq_instance_blob_key')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_instance_sop_instance_uid'))
    )
    op.create_index(op.f('ix_instance_series_pk_sop_class_uid'), 'instance', ['series_pk', 'sop_class_uid'])
    # the rows create_schema() writes: schema_version 1 and the trust change counter
    op.bulk_insert(sa.table("schema_version", sa.column("version", sa.Integer)), [{"version": 1}])
    op.bulk_insert(
        sa.table("trust_state", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger),
                 sa.column("crl_number", sa.BigInteger)),
        [{"id": 1, "version": 1, "crl_number": 0}],
    )


def downgrade() -> None:
    for table in ("instance", "series", "study", "trust_token", "trust_state", "trust_group",
                  "trust_certificate", "schema_version", "patient"):
        op.drop_table(table)
