#!/usr/bin/env bash
# postgres-init (docker-compose.yml): waits for PostgreSQL, then applies roles.sql as the superuser.
# Connection from PGHOST / PGPORT / PGUSER / PGPASSWORD; roles and databases from the environment
# (see roles.sql). Idempotent: safe on every `docker compose up`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for _ in $(seq 1 60); do
  pg_isready -q -d postgres && break
  sleep 1
done
psql -X -q -v ON_ERROR_STOP=1 -d postgres -f "$here/roles.sql"
echo "postgres-init: roles ${HURREN_PG_USER}, ${AIRFLOW_DB_USER} and databases ${HURREN_STORE_DB}, ${AIRFLOW_DB} in place"
