"""signup requests: public signups recorded at once, decided by a worker

Revision ID: 8acfc4cdf349
Revises: 1906f59b5ecf
Create Date: 2026-12-16 10:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '8acfc4cdf349'
down_revision = '1906f59b5ecf'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('signup_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('checkbox_value', sa.String(length=100), nullable=False),
    sa.Column('terms_version_id', sa.Integer(), nullable=False),
    sa.Column('ip', sa.String(length=45), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('source', sa.String(length=512), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['terms_version_id'], ['terms_version.id'], name=op.f('fk_signup_request_terms_version_id_terms_version')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signup_request'))
    )
    with op.batch_alter_table('signup_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signup_request_requested_at'), ['requested_at'], unique=False)


def downgrade():
    with op.batch_alter_table('signup_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signup_request_requested_at'))

    op.drop_table('signup_request')
