"""sealed runs: each workspace's sealed-run policy, the runs (enclave.sealed), and the export
requests made from their results (their origin and appointed reviewers)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('export_requests') as batch:
        batch.add_column(sa.Column('origin', sa.String(length=16), server_default='sandbox', nullable=False))
    op.create_table('appointed_reviewers',
    sa.Column('request_id', sa.String(length=32), nullable=False),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['export_requests.id'], ),
    sa.PrimaryKeyConstraint('request_id', 'reviewer')
    )
    op.create_index(op.f('ix_appointed_reviewers_reviewer'), 'appointed_reviewers', ['reviewer'], unique=False)
    op.create_table('sealed_run_policies',
    sa.Column('workspace', sa.String(length=40), nullable=False),
    sa.Column('approval_required', sa.Boolean(), nullable=False),
    sa.Column('runs_per_day', sa.Integer(), nullable=False),
    sa.Column('reviewers', sa.JSON(), nullable=False),
    sa.Column('limits', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace')
    )
    op.create_table('sealed_runs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('workspace', sa.String(length=40), nullable=False),
    sa.Column('requester', sa.String(length=64), nullable=False),
    sa.Column('release', sa.String(length=160), nullable=False),
    sa.Column('notebook_path', sa.String(length=1024), nullable=False),
    sa.Column('notebook_sha256', sa.String(length=64), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('limits', sa.JSON(), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('refusal', sa.JSON(), nullable=True),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.JSON(), nullable=True),
    sa.Column('export_request_id', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['export_request_id'], ['export_requests.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sealed_runs_queue', 'sealed_runs', ['state', 'submitted_at'], unique=False)
    op.create_index('ix_sealed_runs_requester', 'sealed_runs', ['workspace', 'requester', 'submitted_at'],
                    unique=False)
    op.create_index(op.f('ix_sealed_runs_notebook_sha256'), 'sealed_runs', ['notebook_sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sealed_runs_notebook_sha256'), table_name='sealed_runs')
    op.drop_index('ix_sealed_runs_requester', table_name='sealed_runs')
    op.drop_index('ix_sealed_runs_queue', table_name='sealed_runs')
    op.drop_table('sealed_runs')
    op.drop_table('sealed_run_policies')
    op.drop_index(op.f('ix_appointed_reviewers_reviewer'), table_name='appointed_reviewers')
    op.drop_table('appointed_reviewers')
    with op.batch_alter_table('export_requests') as batch:
        batch.drop_column('origin')
