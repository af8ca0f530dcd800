"""language preferences: the language each person reads Enclave in, by user name

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 20:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('language_preferences',
    sa.Column('username', sa.String(length=255), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("language IN ('zh_CN', 'en')", name='known_language'),
    sa.PrimaryKeyConstraint('username')
    )


def downgrade() -> None:
    op.drop_table('language_preferences')
