#!/bin/sh
# Run once by the postgres image on the first start of an empty data volume (/docker-entrypoint-initdb.d):
# creates the Optuna storage's database beside MLflow's ($POSTGRES_DB). They must differ: both keep their
# schema version in a table named alembic_version.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --set=db="$OPTUNA_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
