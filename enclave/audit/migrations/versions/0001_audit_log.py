"""the audit log: records (hash-chained, derived query columns) and signed checkpoints

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

from enclave.audit.models import ExactJSON

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = "the audit log is append-only"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # PostgreSQL 15 has only stored generated columns; SQLite computes virtual ones when read.
    persisted = True if dialect == "postgresql" else None
    op.create_table('audit_records',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('entry', sa.Text().with_variant(ExactJSON(), 'postgresql'), nullable=False),
    sa.Column('chain_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('time', sa.String(length=27), sa.Computed("entry ->> 'time'", persisted=persisted)),
    sa.Column('actor', sa.String(length=128), sa.Computed("entry ->> 'actor'", persisted=persisted)),
    sa.Column('action', sa.String(length=64), sa.Computed("entry ->> 'action'", persisted=persisted)),
    sa.Column('workspace', sa.String(length=128), sa.Computed("entry ->> 'workspace'", persisted=persisted)),
    sa.CheckConstraint("seq = CAST(entry ->> 'seq' AS BIGINT)", name='ck_audit_records_seq_in_entry'),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index('ix_audit_records_actor', 'audit_records', ['actor', 'seq'])
    op.create_index('ix_audit_records_workspace', 'audit_records', ['workspace', 'seq'])
    op.create_index('ix_audit_records_action', 'audit_records', ['action', 'seq'])
    op.create_index('ix_audit_records_time', 'audit_records', ['time', 'seq'])
    op.create_table('audit_checkpoints',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('time', sa.String(length=27), nullable=False),
    sa.Column('root_hash', sa.String(length=64), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('frontier', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('tree_size')
    )
    # Append-only at the database too: a guard against mistakes (whoever can drop a trigger can also
    # edit rows; the hash chain and the signed checkpoints catch that).
    if dialect == "sqlite":
        for table in ('audit_records', 'audit_checkpoints'):
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}"
                           f" BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
    elif dialect == "postgresql":
        op.execute(f"""CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$""")
        for table in ('audit_records', 'audit_checkpoints'):
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table}"
                       " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")


def downgrade() -> None:
    op.drop_table('audit_checkpoints')
    op.drop_index('ix_audit_records_time', table_name='audit_records')
    op.drop_index('ix_audit_records_action', table_name='audit_records')
    op.drop_index('ix_audit_records_workspace', table_name='audit_records')
    op.drop_index('ix_audit_records_actor', table_name='audit_records')
    op.drop_table('audit_records')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_append_only()")
