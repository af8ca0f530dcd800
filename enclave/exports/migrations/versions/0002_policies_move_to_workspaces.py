"""review policies move to the workspace: its export policy in Enclave's database, set through
provisioning (enclave.workspaces.set_export_policy)

Requests keep the approvals and the policy version they were made under. A policy set here before
is not carried over (the two databases may be on different servers): set it again with
``enclave workspace set-export-policy WS approvals_required=N``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 16:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table('review_policies')


def downgrade() -> None:
    op.create_table('review_policies',
    sa.Column('workspace', sa.String(length=40), nullable=False),
    sa.Column('approvals_required', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace')
    )
