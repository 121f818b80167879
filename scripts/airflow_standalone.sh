#!/usr/bin/env bash
# Quickstart Airflow: api-server, scheduler, dag-processor and triggerer of Airflow 3 in one
# foreground command (`airflow standalone`), this project's dags/ and plugins/, and the same SQLite
# metadata database as ./scripts/quickstart.sh (data/airflow/airflow.db), so the quickstart's runs
# show in the grid. Not for production: see docker-compose.yaml.
#
#   scripts/airflow_standalone.sh          # then open http://127.0.0.1:8080 (AIRFLOW_PORT to change)
#
# Login: user "admin"; its password is printed on first start and kept in
# data/airflow/simple_auth_manager_passwords.json.generated (SimpleAuthManager, the Airflow 3
# default).
# Traitflow's database: TRAITFLOW_DATABASE_URL (or AIRFLOW_CONN_TRAITFLOW_DB) if set, else the
# DAG tasks start the embedded Postgres under data/.
#
# The api-server listens on loopback only (AIRFLOW_HOST to change); the executor runs at most as
# many tasks at once as the machine has cores (AIRFLOW__CORE__PARALLELISM to change). Ctrl-C or
# TERM stops every process this script started: standalone runs in its own process group, which
# is sent TERM, then KILL for whatever is still running after STOP_GRACE_S seconds (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

export TRAITFLOW_DATA_DIR="${TRAITFLOW_DATA_DIR:-$root/data}"
export TRAITFLOW_INPUT_DIR="${TRAITFLOW_INPUT_DIR:-$TRAITFLOW_DATA_DIR/sample}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$TRAITFLOW_DATA_DIR/airflow}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH="$AIRFLOW_HOME/bundles"
export AIRFLOW__CORE__DAGS_FOLDER="$root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="${AIRFLOW_HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$(nproc)}"
# Task processes report to the api-server's execution API, which Airflow otherwise expects on
# localhost:8080 whatever AIRFLOW_PORT says.
api_host="$AIRFLOW__API__HOST"
[[ "$api_host" == "0.0.0.0" ]] && api_host=127.0.0.1
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$api_host:$AIRFLOW__API__PORT/execution/}"
# The quickstart's sample starts on a date it records; the DAGs' start date follows it unless set.
if [[ -z "${TRAITFLOW_START_DATE:-}" && -f "$TRAITFLOW_DATA_DIR/sample_truth/timeline.env" ]]; then
  # shellcheck disable=SC1091
  source "$TRAITFLOW_DATA_DIR/sample_truth/timeline.env"
  export TRAITFLOW_START_DATE
fi
# Tasks read the Traitflow database from the Airflow connection `traitflow_db`; the env-var form
# needs no metadata-DB entry and no UI step.
if [[ -n "${TRAITFLOW_DATABASE_URL:-}" && -z "${AIRFLOW_CONN_TRAITFLOW_DB:-}" ]]; then
  export AIRFLOW_CONN_TRAITFLOW_DB="$TRAITFLOW_DATABASE_URL"
fi

mkdir -p "$AIRFLOW_HOME" "$TRAITFLOW_DATA_DIR"
# `standalone` migrates the metadata DB itself, then starts each component as an `airflow ...`
# subprocess found on PATH: put the project's venv first.
export PATH="$root/.venv/bin:$PATH"

setsid airflow standalone &
group=$!

stop() {
  trap - INT TERM
  kill -TERM -- "-$group" 2>/dev/null || true
  for _ in $(seq 1 "${STOP_GRACE_S:-20}"); do
    kill -0 -- "-$group" 2>/dev/null || exit 0
    sleep 1
  done
  echo "airflow_standalone.sh: processes still running after ${STOP_GRACE_S:-20}s, killing them" >&2
  kill -KILL -- "-$group" 2>/dev/null || true
  exit 0
}
trap stop INT TERM

set +e
wait "$group"
status=$?
set -e
# standalone ended by itself (e.g. a failed start): take down anything it left behind.
kill -TERM -- "-$group" 2>/dev/null || true
exit "$status"
