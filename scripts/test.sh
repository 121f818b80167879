#!/usr/bin/env bash
# The project's test command (README): the whole suite, unit + real-Postgres + Airflow dag.test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
