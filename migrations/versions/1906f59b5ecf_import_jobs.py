"""import jobs: the console's CSV import, done by workers in batches

Revision ID: 1906f59b5ecf
Revises: 55416f3c776e
Create Date: 2026-12-15 10:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '1906f59b5ecf'
down_revision = '55416f3c776e'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('import_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.Column('ip', sa.String(length=45), nullable=True),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('consent_source', sa.String(length=512), nullable=False),
    sa.Column('confirmed', sa.Boolean(), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'done', 'failed', name='importstate', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('rows_read', sa.Integer(), nullable=False),
    sa.Column('imported', sa.Integer(), nullable=False),
    sa.Column('skipped_existing', sa.Integer(), nullable=False),
    sa.Column('skipped_suppressed', sa.Integer(), nullable=False),
    sa.Column('skipped_duplicate', sa.Integer(), nullable=False),
    sa.Column('bad_rows', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('failed_runs', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operator.id'], name=op.f('fk_import_job_operator_id_operator')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_job'))
    )
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.create_index('ix_import_job_open', ['state', 'heartbeat_at'], unique=False)

    op.create_table('import_bad_row',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['import_job.id'], name=op.f('fk_import_bad_row_job_id_import_job')),
    sa.PrimaryKeyConstraint('job_id', 'line', name=op.f('pk_import_bad_row'))
    )


def downgrade():
    op.drop_table('import_bad_row')
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.drop_index('ix_import_job_open')

    op.drop_table('import_job')
