-- One PostgreSQL, one database per tool (run once, on the first start of the volume).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE optuna;
CREATE DATABASE feast;
