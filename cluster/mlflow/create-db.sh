#!/usr/bin/env bash
# Create the PostgreSQL role and databases of an ecg-tune tracking service (run once, as a database
# superuser, e.g. `sudo -u postgres` on the database host or with PGHOST/PGUSER set):
#   mlflow       MLflow backend store (experiments, runs, params, metrics, registered models)
#   mlflow_auth  MLflow basic-auth user store
#   optuna       Optuna studies shared by sweeps and optuna-dashboard (--optuna-storage)
#
#   ECG_TUNE_DB_PASSWORD=... cluster/mlflow/create-db.sh
#
# Settings: ECG_TUNE_DB_USER (ecgtune), MLFLOW_DB (mlflow), MLFLOW_AUTH_DB (mlflow_auth), OPTUNA_DB
# (optuna); the usual libpq variables (PGHOST, PGPORT, PGUSER) choose the server and the superuser.
# The password goes to psql on stdin, never on a command line. Idempotent: existing objects are kept.
set -euo pipefail
: "${ECG_TUNE_DB_PASSWORD:?set ECG_TUNE_DB_PASSWORD (e.g. from your secret store) for the new role}"
DB_USER=${ECG_TUNE_DB_USER:-ecgtune}
DATABASES=("${MLFLOW_DB:-mlflow}" "${MLFLOW_AUTH_DB:-mlflow_auth}" "${OPTUNA_DB:-optuna}")
PSQL=(psql -X -q -v ON_ERROR_STOP=1 --no-psqlrc -d "${PGDATABASE:-postgres}")

for name in "$DB_USER" "${DATABASES[@]}"; do
  [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || { echo "create-db.sh: bad identifier: $name" >&2; exit 2; }
done
pw=${ECG_TUNE_DB_PASSWORD//\'/\'\'}

"${PSQL[@]}" <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$DB_USER')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') \gexec
ALTER ROLE "$DB_USER" WITH LOGIN PASSWORD '$pw';
SQL
for db in "${DATABASES[@]}"; do
  "${PSQL[@]}" <<SQL
SELECT format('CREATE DATABASE %I OWNER %I', '$db', '$DB_USER')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db') \gexec
REVOKE ALL ON DATABASE "$db" FROM PUBLIC;
GRANT ALL ON DATABASE "$db" TO "$DB_USER";
SQL
done
echo "create-db.sh: role $DB_USER owns databases ${DATABASES[*]}" >&2
dbs=$(IFS=,; echo "${DATABASES[*]}")
echo "create-db.sh: allow only the cluster network in pg_hba.conf, e.g.  host $dbs $DB_USER 10.0.0.0/16 scram-sha-256" >&2
