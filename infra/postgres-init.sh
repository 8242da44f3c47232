#!/bin/sh
# Creates MLflow's database beside Prefect's on first start of the PostgreSQL container.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE ${MLFLOW_DB:-mlflow};"
