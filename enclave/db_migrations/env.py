"""Alembic environment of Enclave's own database (run through ``enclave.db``)."""

from alembic import context

from enclave.db import Base, engine_for
from enclave.migrate import run_online

run_online(engine_for(context.config.get_main_option("sqlalchemy.url")), Base.metadata)
