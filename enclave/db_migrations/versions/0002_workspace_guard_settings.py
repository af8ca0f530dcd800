"""workspace guard settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workspaces') as batch:
        batch.add_column(sa.Column('guard', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('workspaces') as batch:
        batch.drop_column('guard')
