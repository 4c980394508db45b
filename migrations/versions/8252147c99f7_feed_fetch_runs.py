"""feed fetch runs: the console's "fetch feeds now", done by a worker

Revision ID: 8252147c99f7
Revises: fbdb34f8578f
Create Date: 2026-12-14 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8252147c99f7'
down_revision = 'fbdb34f8578f'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('feed_fetch_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.Column('ip', sa.String(length=45), nullable=True),
    sa.Column('urls', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'done', 'not_queued', name='fetchrunstatus', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reports', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operator.id'], name=op.f('fk_feed_fetch_run_operator_id_operator')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feed_fetch_run'))
    )


def downgrade():
    op.drop_table('feed_fetch_run')
