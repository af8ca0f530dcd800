#!/bin/sh
# Start PostgreSQL as `postgres`; on the first start (an empty data directory) make the cluster:
#   - initdb (UTF-8; `postgres` by peer authentication on the local socket only),
#   - the role ENCLAVE_DB_USER (default enclave) with the password from POSTGRES_PASSWORD_FILE,
#   - its databases: ENCLAVE_DATABASES (default: enclave jupyterhub exports audit),
#   - connections over TCP for that role alone, with scram-sha-256.
# Started as root (the secret file is root's, mode 0600) and drops to `postgres` for everything else.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user=${ENCLAVE_DB_USER:-enclave}
databases=${ENCLAVE_DATABASES:-enclave jupyterhub exports audit}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ "$(id -u)" != 0 ]; then
  echo "enclave-postgres: start as root (it reads the password secret, then runs as postgres)" >&2
  exit 2
fi
install -d -o postgres -g postgres -m 2775 /run/postgresql
chown postgres:postgres "$PGDATA"
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  secret=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres-password}
  if [ ! -r "$secret" ]; then
    echo "enclave-postgres: no password file at $secret (POSTGRES_PASSWORD_FILE): the cluster is not made" >&2
    exit 2
  fi
  password=$(head -n 1 "$secret")
  if [ ${#password} -lt 16 ]; then
    echo "enclave-postgres: the password in $secret has ${#password} characters; at least 16 are needed" >&2
    exit 2
  fi
  echo "enclave-postgres: making the cluster in $PGDATA"
  as_postgres initdb -D "$PGDATA" --encoding=UTF8 --locale=C.UTF-8 --username=postgres \
    --auth-local=peer --auth-host=reject >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<CONF
# Enclave (images/postgres): on every address of the container, which only the compose network reaches.
listen_addresses = '*'
password_encryption = 'scram-sha-256'
CONF
  cat >"$PGDATA/pg_hba.conf" <<HBA
# TYPE  DATABASE  USER      ADDRESS  METHOD
local   all       postgres           peer
host    all       $user     all      scram-sha-256
HBA
  # A server on the local socket alone while the role and databases are made.
  as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  printf '%s\n' "CREATE ROLE \"$user\" LOGIN PASSWORD :'password';" \
    | as_postgres psql -X -q -v ON_ERROR_STOP=1 -v password="$password" -d postgres
  for db in $databases; do
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$db\" OWNER \"$user\""
  done
  as_postgres pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  echo "enclave-postgres: made role $user and databases: $databases"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA" "$@"
