"""operator session versions, used signup form tokens

Revision ID: 55416f3c776e
Revises: 8252147c99f7
Create Date: 2026-12-14 10:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '55416f3c776e'
down_revision = '8252147c99f7'
branch_labels = None
depends_on = None


def upgrade():
    # Existing operators start at version 0; their cookies from before ("id" alone) are refused.
    with op.batch_alter_table('operator', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))

    op.create_table('used_form_token',
    sa.Column('nonce', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_used_form_token'))
    )
    with op.batch_alter_table('used_form_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_form_token_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('used_form_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_form_token_expires_at'))

    op.drop_table('used_form_token')
    with op.batch_alter_table('operator', schema=None) as batch_op:
        batch_op.drop_column('session_version')
