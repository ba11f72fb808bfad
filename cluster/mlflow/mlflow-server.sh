#!/usr/bin/env bash
# MLflow tracking server for ecg-tune sweeps: PostgreSQL backend store, shared artifact root,
# HTTP basic authentication, bound to an internal interface. Used by mlflow.service (systemd) and
# usable by hand; see cluster/README.md ("MLflow tracking service").
#
# Settings (environment; mlflow.env.example lists them):
#   MLFLOW_BACKEND_STORE_URI       postgresql://USER@HOST:5432/DB   required; NO password in it
#   MLFLOW_ARTIFACTS_DESTINATION   /shared/mlflow-artifacts | s3://bucket/prefix   required
#   MLFLOW_HOST                    interface to bind (default 127.0.0.1; the cluster-network address
#                                  of this machine for a team server). 0.0.0.0/:: are refused unless
#                                  MLFLOW_ALLOW_ALL_INTERFACES=1.
#   MLFLOW_PORT (5000)  MLFLOW_WORKERS (4)  MLFLOW_ALLOWED_HOSTS (Host headers, e.g. mlflow.internal:5000)
#   MLFLOW_AUTH                    basic (default) | none (only for a loopback-only single-user server)
#   MLFLOW_AUTH_DATABASE_URI       user store of basic auth (default: the backend URI with its database
#                                  name suffixed _auth, e.g. .../mlflow_auth)
#   MLFLOW_AUTH_DEFAULT_PERMISSION READ (default) | EDIT | MANAGE | NO_PERMISSIONS
#   MLFLOW_BIN                     mlflow executable (default: mlflow on PATH)
# Secrets (never in this file, the unit, the URI or the command line, where `ps` would show them):
#   database password   PGPASSWORD, a PGPASSFILE, or the systemd credential `mlflow-db-password`
#   admin password      MLFLOW_AUTH_ADMIN_PASSWORD or the systemd credential `mlflow-admin-password`;
#                       read once, when the auth database is still empty (MLflow's bootstrap).
#   CSRF signing key    MLFLOW_FLASK_SERVER_SECRET_KEY or the credential `mlflow-flask-secret-key`
#                       (default: random per start; servers sharing a name must share the key)
# basic auth needs the mlflow[auth] extra (Flask-WTF).
set -euo pipefail

die() { echo "mlflow-server.sh: $*" >&2; exit 2; }

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI=postgresql://USER@HOST:5432/DB}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION=/shared/mlflow-artifacts or s3://bucket/prefix}"
MLFLOW_HOST=${MLFLOW_HOST:-127.0.0.1}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
MLFLOW_WORKERS=${MLFLOW_WORKERS:-4}
MLFLOW_AUTH=${MLFLOW_AUTH:-basic}
MLFLOW_BIN=${MLFLOW_BIN:-mlflow}

# A password inside a URI ends up in `ps`, in logs and in MLflow's own error messages.
for uri in "$MLFLOW_BACKEND_STORE_URI" "${MLFLOW_AUTH_DATABASE_URI:-}"; do
  if [[ "$uri" =~ ^[a-z0-9+]+://[^/@]*:[^/@]*@ ]]; then
    die "remove the password from the database URI; use PGPASSWORD, PGPASSFILE or a systemd credential"
  fi
done
case "$MLFLOW_HOST" in
  0.0.0.0|::|'[::]'|'*')
    [[ "${MLFLOW_ALLOW_ALL_INTERFACES:-0}" == 1 ]] || die "refusing to bind $MLFLOW_HOST (all interfaces); bind the cluster-network address, or set MLFLOW_ALLOW_ALL_INTERFACES=1 behind a firewall/TLS proxy" ;;
esac

# systemd LoadCredential= files (see mlflow.service) become environment variables here only.
if [[ -n "${CREDENTIALS_DIRECTORY:-}" ]]; then
  [[ -z "${PGPASSWORD:-}" && -r "$CREDENTIALS_DIRECTORY/mlflow-db-password" ]] && PGPASSWORD=$(<"$CREDENTIALS_DIRECTORY/mlflow-db-password") && export PGPASSWORD
  [[ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" && -r "$CREDENTIALS_DIRECTORY/mlflow-admin-password" ]] && MLFLOW_AUTH_ADMIN_PASSWORD=$(<"$CREDENTIALS_DIRECTORY/mlflow-admin-password") && export MLFLOW_AUTH_ADMIN_PASSWORD
  [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" && -r "$CREDENTIALS_DIRECTORY/mlflow-flask-secret-key" ]] && MLFLOW_FLASK_SERVER_SECRET_KEY=$(<"$CREDENTIALS_DIRECTORY/mlflow-flask-secret-key") && export MLFLOW_FLASK_SERVER_SECRET_KEY
fi

# MLflow 3's job runner (GenAI evaluation jobs: a runner + 7 huey consumers, ~1.2 GB) is not used by
# ecg-tune; turn it on with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true if you need it.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

case "$MLFLOW_ARTIFACTS_DESTINATION" in
  *://*) ;;  # s3://, gs://, ...: credentials come from the usual SDK chain (instance role, env)
  *) mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION" ;;
esac

args=(server
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --serve-artifacts
  --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
[[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]] && args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")

case "$MLFLOW_AUTH" in
  basic)
    if [[ -z "${MLFLOW_AUTH_DATABASE_URI:-}" ]]; then
      base=${MLFLOW_BACKEND_STORE_URI%%\?*}
      query=${MLFLOW_BACKEND_STORE_URI#"$base"}
      MLFLOW_AUTH_DATABASE_URI="${base}_auth${query}"
    fi
    # The auth config holds no secret (the admin password stays in the environment, which MLflow
    # reads itself); it is still written privately, next to nothing else.
    umask 077
    runtime=${RUNTIME_DIRECTORY:-$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")}
    cat > "$runtime/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    export MLFLOW_AUTH_CONFIG_PATH="$runtime/basic_auth.ini"
    # The auth app signs its CSRF tokens with this key. Several servers behind one name must share it
    # (give it as a secret); for one server a fresh random key per start is fine (UI forms opened
    # before a restart must be reloaded).
    if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
      MLFLOW_FLASK_SERVER_SECRET_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
      export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    args+=(--app-name basic-auth)
    ;;
  none)
    [[ "$MLFLOW_HOST" == 127.0.0.1 || "$MLFLOW_HOST" == localhost || "$MLFLOW_HOST" == ::1 ]] \
      || die "MLFLOW_AUTH=none is only allowed on a loopback address"
    ;;
  *) die "MLFLOW_AUTH must be basic or none" ;;
esac

echo "mlflow-server.sh: MLflow on http://$MLFLOW_HOST:$MLFLOW_PORT (auth: $MLFLOW_AUTH, workers: $MLFLOW_WORKERS)" >&2
exec "$MLFLOW_BIN" "${args[@]}"
