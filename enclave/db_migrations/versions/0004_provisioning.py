"""provisioning: data holders and their sources, account states and expiry, workspace purpose,
holder, state, expiry and export policy, workspace owners, attachments awaiting the holder's consent

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default='active'))
        batch.add_column(sa.Column('state_reason', sa.String(length=500), nullable=False, server_default=''))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint('known_account_state', "state IN ('active', 'disabled')")
    with op.batch_alter_table('account_roles') as batch:
        batch.drop_constraint('known_role', type_='check')
        batch.create_check_constraint('known_role', "role IN ('admin', 'holder', 'operator', 'reviewer')")
    with op.batch_alter_table('workspaces') as batch:
        batch.add_column(sa.Column('purpose', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('holder', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default='active'))
        batch.add_column(sa.Column('state_reason', sa.String(length=500), nullable=False, server_default=''))
        batch.add_column(sa.Column('state_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('operators_may_review', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('export_policy', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('export_policy_version', sa.Integer(), nullable=False, server_default='0'))
        batch.create_foreign_key('workspace_holder', 'accounts', ['holder'], ['username'])
        batch.create_check_constraint('known_workspace_state', "state IN ('active', 'frozen', 'archived')")
    with op.batch_alter_table('memberships') as batch:
        batch.drop_constraint('known_member_role', type_='check')
        batch.create_check_constraint('known_member_role', "role IN ('operator', 'reviewer', 'owner')")
    # Releases attached before consent existed were attached by an admin with the holder's word:
    # they stay attached.
    with op.batch_alter_table('attachments') as batch:
        batch.add_column(sa.Column('status', sa.String(length=20), nullable=False, server_default='attached'))
        batch.add_column(sa.Column('consented_by', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('consented_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint('known_attachment_status', "status IN ('awaiting_consent', 'attached')")
    op.create_table('sources',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('holder', sa.String(length=32), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['holder'], ['accounts.username']),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('sources')
    with op.batch_alter_table('attachments') as batch:
        batch.drop_constraint('known_attachment_status', type_='check')
        batch.drop_column('consented_at')
        batch.drop_column('consented_by')
        batch.drop_column('status')
    with op.batch_alter_table('memberships') as batch:
        batch.drop_constraint('known_member_role', type_='check')
        batch.create_check_constraint('known_member_role', "role IN ('operator', 'reviewer')")
    with op.batch_alter_table('workspaces') as batch:
        batch.drop_constraint('known_workspace_state', type_='check')
        batch.drop_constraint('workspace_holder', type_='foreignkey')
        for column in ('export_policy_version', 'export_policy', 'operators_may_review', 'expires_at', 'state_changed_at', 'state_reason', 'state',
                       'holder', 'purpose'):
            batch.drop_column(column)
    with op.batch_alter_table('account_roles') as batch:
        batch.drop_constraint('known_role', type_='check')
        batch.create_check_constraint('known_role', "role IN ('admin', 'operator', 'reviewer')")
    with op.batch_alter_table('accounts') as batch:
        batch.drop_constraint('known_account_state', type_='check')
        for column in ('expires_at', 'state_reason', 'state'):
            batch.drop_column(column)
