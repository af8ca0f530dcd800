"""Alembic environment of the audit log (run through ``models.upgrade``)."""

from alembic import context

from enclave.audit.models import make_engine, metadata
from enclave.migrate import run_online

url = context.config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_online(make_engine(url), metadata)
