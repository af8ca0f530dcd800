"""login failures per client replace the account lock-out

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_failures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['accounts.username'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('login_failures_by_client', 'login_failures', ['username', 'client', 'failed_at'])
    op.create_index(op.f('ix_login_failures_failed_at'), 'login_failures', ['failed_at'])
    # The lock-out's state: a lock in force is lifted (throttling starts afresh, per client).
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('locked_until')
        batch.drop_column('failed_logins')


def downgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('failed_logins', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True))
    op.drop_index(op.f('ix_login_failures_failed_at'), table_name='login_failures')
    op.drop_index('login_failures_by_client', table_name='login_failures')
    op.drop_table('login_failures')
