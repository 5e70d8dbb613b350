#!/bin/sh
# One PostgreSQL, one database per tool (run once, on the first start of the volume), owned by
# the role Slipway's services use, which is no superuser. The scoring service gets a read-only
# role for the Feast registry and nothing else.
#   SLIPWAY_DB_PASSWORD          the 'slipway' role (Prefect, MLflow, Optuna, Feast: owner)
#   SLIPWAY_DB_READER_PASSWORD   the 'slipway_reader' role (the scoring service: reads the Feast registry)
set -eu
: "${SLIPWAY_DB_PASSWORD:?set SLIPWAY_DB_PASSWORD}"
: "${SLIPWAY_DB_READER_PASSWORD:?set SLIPWAY_DB_READER_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v app_password="$SLIPWAY_DB_PASSWORD" -v reader_password="$SLIPWAY_DB_READER_PASSWORD" <<'SQL'
CREATE ROLE slipway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE ROLE slipway_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'reader_password';
CREATE DATABASE prefect OWNER slipway;
CREATE DATABASE mlflow OWNER slipway;
CREATE DATABASE mlflow_auth OWNER slipway;
CREATE DATABASE optuna OWNER slipway;
CREATE DATABASE feast OWNER slipway;
REVOKE CONNECT ON DATABASE prefect, mlflow, mlflow_auth, optuna, feast FROM PUBLIC;
GRANT CONNECT ON DATABASE prefect, mlflow, mlflow_auth, optuna, feast TO slipway;
\connect feast
GRANT CONNECT ON DATABASE feast TO slipway_reader;
GRANT USAGE ON SCHEMA public TO slipway_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE slipway IN SCHEMA public GRANT SELECT ON TABLES TO slipway_reader;
SQL
