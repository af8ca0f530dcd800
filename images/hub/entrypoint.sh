#!/bin/sh
# The hub image's entrypoint (hub and launcher services): hands the database password from the
# compose secret to libpq, then runs the command.
#
# The password is in /run/secrets/postgres-password (docker-compose.yml), never in an image or in
# the environment. The database URLs name no password: they carry `passfile=/run/enclave/pgpass`,
# libpq's password file, written here from the secret (root's alone) at each start of the container.
# Every process of the container that opens a database (the hub, its services, and `enclave`
# commands run with `docker-compose exec`) reads it from there.
set -eu
secret=${ENCLAVE_DB_PASSWORD_FILE:-/run/secrets/postgres-password}
passfile=/run/enclave/pgpass
if [ -e "$secret" ]; then
  password=$(head -n 1 "$secret")
  if [ -z "$password" ]; then
    echo "enclave: the database password file $secret is empty" >&2
    exit 2
  fi
  # host:port:database:user:password, with ':' and '\' escaped in the password; root's alone.
  (
    umask 077
    mkdir -p "$(dirname "$passfile")"
    printf '*:*:*:%s:%s\n' "${ENCLAVE_DB_USER:-enclave}" "$(printf '%s' "$password" | sed 's/[\\:]/\\&/g')" >"$passfile.new"
    mv "$passfile.new" "$passfile"
  )
fi
exec "$@"
