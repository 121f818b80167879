#!/usr/bin/env bash
# Quickstart Airflow: api-server, scheduler, dag-processor and triggerer of Airflow 3.3 in one
# foreground process (`airflow standalone`), SQLite metadata under data/airflow_home, this
# project's dags/ and plugins/. Stop with Ctrl-C. Not for production: see docker-compose.yaml.
#
#   scripts/airflow_standalone.sh          # then open http://localhost:8080
#
# Login: user "admin"; its password is printed on first start and kept in
# data/airflow_home/simple_auth_manager_passwords.json.generated (SimpleAuthManager, the
# Airflow 3 default).
# Traitflow's database: TRAITFLOW_DATABASE_URL (or AIRFLOW_CONN_TRAITFLOW_DB) if set, else the
# DAG tasks start the embedded Postgres under data/. The DAGs are paused at first: unpause
# traitflow_daily in the UI, or `airflow dags unpause traitflow_daily` with the same environment.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

export TRAITFLOW_DATA_DIR="${TRAITFLOW_DATA_DIR:-$root/data}"
export TRAITFLOW_INPUT_DIR="${TRAITFLOW_INPUT_DIR:-$TRAITFLOW_DATA_DIR/sample}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$TRAITFLOW_DATA_DIR/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
# Tasks read the Traitflow database from the Airflow connection `traitflow_db`; the env-var form
# needs no metadata-DB entry and no UI step.
if [[ -n "${TRAITFLOW_DATABASE_URL:-}" && -z "${AIRFLOW_CONN_TRAITFLOW_DB:-}" ]]; then
  export AIRFLOW_CONN_TRAITFLOW_DB="$TRAITFLOW_DATABASE_URL"
fi

mkdir -p "$AIRFLOW_HOME" "$TRAITFLOW_DATA_DIR"
# `standalone` migrates the metadata DB itself, then starts each component as an `airflow ...`
# subprocess found on PATH: put the project's venv first.
export PATH="$root/.venv/bin:$PATH"
exec airflow standalone
