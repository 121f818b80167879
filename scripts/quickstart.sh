#!/usr/bin/env bash
# README command 1: install, then run the pipeline end to end on sample data through Airflow.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python scripts/quickstart.py "$@"
