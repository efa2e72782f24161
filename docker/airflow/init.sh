#!/usr/bin/env bash
# airflow-init (docker-compose.yml): runs once per `docker compose up`, before any other Airflow
# component starts. Idempotent.
#   1. migrates Airflow's metadata database (a no-op when it is current; does the upgrade after a
#      new image)
#   2. creates the admin user when the FAB auth manager is in use and the user does not exist
#      (an existing user's password is never changed here: see docs/deploy.md, rotating credentials)
#   3. creates or updates one pool per enabled hospital of the sources configuration
set -euo pipefail

echo "airflow-init: Airflow ${AIRFLOW_VERSION:-}: migrating the metadata database"
airflow db migrate

# (each airflow CLI call costs seconds: the environment, as compose sets it, is asked first)
auth_manager=${AIRFLOW__CORE__AUTH_MANAGER:-$(airflow config get-value core auth_manager)}
if [[ $auth_manager == *FabAuthManager* ]]; then
  : "${_AIRFLOW_WWW_USER_USERNAME:?set AIRFLOW_ADMIN_USER in .env}"
  : "${_AIRFLOW_WWW_USER_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"
  # `users create` leaves an existing user alone (and says so); `--option=value`, so that a value
  # starting with "-" (one generated password in 64) is not taken for an option
  airflow users create --role Admin \
    --username="$_AIRFLOW_WWW_USER_USERNAME" --password="$_AIRFLOW_WWW_USER_PASSWORD" \
    --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Admin}" --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-hurren}" \
    --email "${_AIRFLOW_WWW_USER_EMAIL:-admin@example.invalid}"
else
  echo "airflow-init: auth manager $auth_manager; no user created (configure its users yourself)"
fi

pools_file=$(mktemp)
trap 'rm -f "$pools_file"' EXIT
python "$(dirname "${BASH_SOURCE[0]}")/pools.py" >"$pools_file"
airflow pools import "$pools_file"
echo "airflow-init: done"
