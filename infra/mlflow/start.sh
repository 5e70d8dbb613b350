#!/bin/sh
# Start the MLflow tracking server of the production profile: runs and registry on
# PostgreSQL, artifacts on S3 (served through the server, so clients need only
# MLFLOW_TRACKING_URI and their MLflow user), basic auth with its users on PostgreSQL.
#
# Environment (no defaults for secrets):
#   MLFLOW_BACKEND_STORE_URI     postgresql://USER:PASSWORD@HOST:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI     postgresql://USER:PASSWORD@HOST:5432/mlflow_auth
#   MLFLOW_AUTH_ADMIN_USERNAME   MLflow's own variables: the admin created on first start
#   MLFLOW_AUTH_ADMIN_PASSWORD
#   MLFLOW_FLASK_SERVER_SECRET_KEY the same random value on every MLflow server replica (CSRF)
#   MLFLOW_ARTIFACTS_DESTINATION s3://BUCKET/mlflow
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (MinIO or any S3-compatible store)
#   MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)
#   MLFLOW_ALLOWED_HOSTS         Host headers accepted besides localhost and private IPs, e.g. mlflow:5000
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql://...)}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (postgresql://...)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY}"
# The connection budget (infra/README.md): per worker at most 2 + 3 connections to the tracking store.
export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-2}"
export MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="${MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW:-3}"
config="$(mktemp -d)/basic_auth.ini"
cat > "$config" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
# S3-compatible stores: boto3 reads AWS_ENDPOINT_URL; MLflow's own variable takes it too.
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then export MLFLOW_S3_ENDPOINT_URL="${MLFLOW_S3_ENDPOINT_URL:-$AWS_ENDPOINT_URL}"; fi
set --
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then set -- --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"; fi
exec mlflow server "$@" \
    --app-name basic-auth \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --serve-artifacts \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}"
