"""Alembic environment of the export review service (run through ``models.upgrade``)."""

from alembic import context

from enclave.exports.models import Base, make_engine
from enclave.migrate import run_online

url = context.config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_online(make_engine(url), Base.metadata)
