"""accounts, workspaces, memberships, attachments

Revision ID: 0001
Revises:
Create Date: 2026-11-27 13:31:54.158614
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('username')
    )
    op.create_table('workspaces',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('limits', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('account_roles',
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'operator', 'reviewer')", name='known_role'),
    sa.ForeignKeyConstraint(['username'], ['accounts.username'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('username', 'role')
    )
    op.create_table('attachments',
    sa.Column('workspace_name', sa.String(length=40), nullable=False),
    sa.Column('release', sa.String(length=200), nullable=False),
    sa.Column('attached_by', sa.String(length=64), nullable=False),
    sa.Column('attached_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('columns', sa.JSON(), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['workspace_name'], ['workspaces.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('workspace_name', 'release')
    )
    op.create_table('memberships',
    sa.Column('workspace_name', sa.String(length=40), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('operator', 'reviewer')", name='known_member_role'),
    sa.ForeignKeyConstraint(['username'], ['accounts.username'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_name'], ['workspaces.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('workspace_name', 'username', 'role')
    )


def downgrade() -> None:
    op.drop_table('memberships')
    op.drop_table('attachments')
    op.drop_table('account_roles')
    op.drop_table('workspaces')
    op.drop_table('accounts')
